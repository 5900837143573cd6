/*
 * A baseline (sequential, Huffman, 8-bit) JPEG scan decoded at 1/8 scale, on one or two threads.
 *
 * The caller (app/core/jpeg8.py) parses the headers and describes the scan: Huffman tables, the blocks
 * of an MCU, each component's sampling and quantization.  This file entropy-decodes every block, keeps
 * only the terms the reduced inverse DCT needs (the DC term for a 1x1 output, 25 terms for the 2x2
 * output of 4:2:0 chroma), and finishes with libjpeg's own integer arithmetic: jpeg_idct_1x1,
 * jpeg_idct_2x2, box replication for 4:2:2 chroma, ycc_rgb_convert.  The result is the image Pillow's
 * draft mode gives at 1/8, bit for bit; anything this cannot reproduce exactly returns an error, and
 * the caller decodes with Pillow instead.
 *
 * Two threads: with restart markers the scan splits exactly at an interval boundary.  Without them,
 * the second thread starts at DEFAULT_SPLIT of the data from a guessed state (block start, first block
 * of an MCU) and records where its first WINDOW blocks start.  Huffman codes resynchronize, so the first
 * thread, on reaching that point, finds one of its own block starts (same bit position, same place in
 * the MCU) among the second thread's; from there on both decode the same symbols (the decoder's state is
 * just that position; DC terms are kept as differences until the two parts are joined).  The first
 * thread finishes its blocks into samples as it goes; the second thread's records are finished on both
 * threads after the meeting.  If no common block start is found, the first thread decodes the rest
 * itself: the output is the same either way, only the time differs.
 *
 * Safety: every read is bounds-checked (past the end the bit reader yields zero bits, as libjpeg does,
 * and the caller is told the data ran out); every write goes to an index derived from sizes checked
 * against the caller's buffers; Huffman tables are validated as libjpeg validates them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LOOKAHEAD 10
#define MAX_SLOTS 10
#define WINDOW 4096 /* block starts of the second thread the first one may look through */
/* Where the second thread starts, in thousandths of the data: before the middle, because the first
 * thread also turns its blocks into samples while the second only decodes (measured on two 12 MP
 * photos: 400 -> 6.6 and 7.6 ms, 500 -> 7.3 and 8.5 ms) */
#define DEFAULT_SPLIT 400

enum {
    J8_OK = 0,
    J8_BAD_TABLE = -1,
    J8_BAD_CODE = -2,
    J8_OVERRUN = -3,   /* the scan needs more bits than it has */
    J8_NO_EOI = -4,    /* data ends without an EOI marker (truncated) */
    J8_MARKER = -5,    /* an unexpected marker inside the scan */
    J8_RESTART = -6,   /* restart markers missing, extra or out of sequence */
    J8_ARGS = -7,
    J8_NOMEM = -8,
    J8_RANGE = -9,     /* a 2x2 block out of the range where libjpeg's C and SIMD IDCTs agree */
};

typedef struct {
    uint16_t look[1 << LOOKAHEAD]; /* (length << 8) | symbol for codes up to LOOKAHEAD bits; 0: longer */
    /* code and magnitude bits together, when both fit in LOOKAHEAD bits: value << 16 | has value << 11 |
     * advance of the coefficient index << 4 (run + 1; 16 for ZRL; 64 for EOB) | total length;
     * for DC tables the advance is 0.  0: not in one step, use look[] */
    int32_t fast[1 << LOOKAHEAD];
    int32_t maxcode[17];
    int32_t valoffset[17];
    uint8_t vals[256];
    int nvals;
} htable;

typedef struct {
    const uint8_t *d;
    size_t n;   /* bytes of data; reads past it give zeros */
    size_t pos; /* next byte to load */
    uint64_t buf;
    int bits;
} bitreader;

typedef struct {
    const htable *dc, *ac;
    int comp;
    int s;             /* output samples per block side: 1 (DC only) or 2 (jpeg_idct_2x2) */
    int hh, vv;        /* block position within the component's part of the MCU */
    int off;           /* offset of this block's record within an MCU record, in int16 */
    int terms;         /* int16 in the record: 1, or 26 for 2x2 (25 terms + a has-AC flag) */
    int8_t keep[64];   /* zigzag index -> position in the record (-1: not kept); keep[0] == 0 */
} slotdef;

typedef struct {
    int h, v, s;        /* sampling factors, samples per block side */
    int32_t q[25];      /* quantization values of the kept terms (q[0]: DC) */
    uint8_t *plane;     /* samples, pw x ph */
    long pw, ph;
} compdef;

typedef struct {
    htable tables[8]; /* 0-3 DC, 4-7 AC */
    slotdef slots[MAX_SLOTS];
    compdef comps[4];
    int ncomp;
    int bpm;          /* blocks per MCU */
    int rec;          /* int16 per MCU record */
    long mcus_x;
    long total_mcus;
    long restart;     /* MCUs per restart interval, 0: none */
    const uint8_t *data; /* destuffed entropy data */
    size_t n;
    size_t *rst_off;  /* byte offset where each restart interval starts (rst_off[0] = 0) */
    long n_intervals;
} scan;

#define EXTEND(x, s) ((x) < (1 << ((s)-1)) ? (x) + (int)((unsigned)-1 << (s)) + 1 : (x))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------ tables */

static int build_table(htable *t, const uint8_t *counts, const uint8_t *vals, int is_dc) {
    int total = 0;
    for (int l = 0; l < 16; l++) total += counts[l];
    if (total > 256) return J8_BAD_TABLE;
    memset(t->look, 0, sizeof t->look);
    t->nvals = total;
    memcpy(t->vals, vals, (size_t)total);
    if (is_dc) {
        for (int i = 0; i < total; i++)
            if (vals[i] > 15) return J8_BAD_TABLE;
    }
    int32_t code = 0;
    int p = 0;
    for (int l = 1; l <= 16; l++) {
        int c = counts[l - 1];
        t->valoffset[l] = p - code;
        if (c) {
            for (int i = 0; i < c; i++) {
                if (l <= LOOKAHEAD) {
                    int shift = LOOKAHEAD - l;
                    int base = (code + i) << shift;
                    for (int s = 0; s < (1 << shift); s++)
                        t->look[base + s] = (uint16_t)((l << 8) | vals[p + i]);
                }
            }
            p += c;
            code += c;
            t->maxcode[l] = code - 1;
            if (code >= (1 << l)) return J8_BAD_TABLE; /* as libjpeg: codes overflow their length */
        } else {
            t->maxcode[l] = -1;
        }
        code <<= 1;
    }
    for (int peek = 0; peek < (1 << LOOKAHEAD); peek++) {
        int v = t->look[peek];
        t->fast[peek] = 0;
        if (!v) continue;
        int l = v >> 8, sym = v & 0xff;
        int size = is_dc ? sym : sym & 15, run = is_dc ? 0 : sym >> 4;
        if (l + size > LOOKAHEAD) continue;
        int value = 0;
        if (size) {
            int x = (peek >> (LOOKAHEAD - l - size)) & ((1 << size) - 1);
            value = EXTEND(x, size);
        }
        int advance = is_dc ? 0 : size ? run + 1 : run == 15 ? 16 : 64;
        t->fast[peek] = (int32_t)(((uint32_t)value << 16) | (uint32_t)((size != 0) << 11) | (uint32_t)(advance << 4) |
                                  (uint32_t)(l + size));
    }
    return J8_OK;
}

/* -------------------------------------------------------------------------------- bit reader */

static inline void br_init(bitreader *r, const uint8_t *d, size_t n, size_t start) {
    r->d = d;
    r->n = n;
    r->pos = start;
    r->buf = 0;
    r->bits = 0;
}

ALWAYS_INLINE void br_fill(bitreader *r) {
    if (r->pos + 8 <= r->n) {
        /* eight bytes at once; the bits past the whole bytes taken are the data's own, so loading
         * them again at the next refill ORs in the same values */
        uint64_t w;
        memcpy(&w, r->d + r->pos, 8);
        w = __builtin_bswap64(w);
        r->buf |= w >> r->bits;
        int nb = (63 - r->bits) >> 3;
        r->pos += (size_t)nb;
        r->bits += nb * 8;
    } else {
        while (r->bits <= 56) {
            uint8_t b = r->pos < r->n ? r->d[r->pos] : 0;
            r->pos++;
            r->buf |= (uint64_t)b << (56 - r->bits);
            r->bits += 8;
        }
    }
}

static inline uint64_t br_bitpos(const bitreader *r) { return (uint64_t)r->pos * 8 - (uint64_t)r->bits; }

static inline int br_get(bitreader *r, int s) { /* s in 1..15, bits >= s guaranteed by caller */
    int v = (int)(r->buf >> (64 - s));
    r->buf <<= s;
    r->bits -= s;
    return v;
}

ALWAYS_INLINE int decode_sym(bitreader *r, const htable *t) { /* bits >= 16 guaranteed */
    int peek = (int)(r->buf >> (64 - LOOKAHEAD));
    int v = t->look[peek];
    if (v) {
        int l = v >> 8;
        r->buf <<= l;
        r->bits -= l;
        return v & 0xff;
    }
    int l = LOOKAHEAD + 1;
    int32_t code = (int32_t)(r->buf >> (64 - l));
    while (code > t->maxcode[l]) {
        l++;
        if (l > 16) return -1;
        code = (int32_t)(r->buf >> (64 - l));
    }
    int idx = code + t->valoffset[l];
    if (idx < 0 || idx >= t->nvals) return -1;
    r->buf <<= l;
    r->bits -= l;
    return t->vals[idx];
}

/* The next AC symbol and its value: advance of the coefficient index (run + 1, 16 for ZRL, 64 for
 * EOB), has-value flag and value, as in the fast table; 0 on a code the table lacks (the advance of
 * a real symbol is never 0). */
ALWAYS_INLINE int32_t next_ac(bitreader *r, const htable *ac) {
    if (r->bits < 32) br_fill(r);
    int32_t e = ac->fast[r->buf >> (64 - LOOKAHEAD)];
    if (e) {
        r->buf <<= (e & 15);
        r->bits -= (e & 15);
        return e;
    }
    int rs = decode_sym(r, ac);
    if (rs < 0) return 0;
    int run = rs >> 4, s = rs & 15, value = 0;
    if (s) {
        int v = br_get(r, s);
        value = EXTEND(v, s);
    }
    int advance = s ? run + 1 : run == 15 ? 16 : 64;
    return (int32_t)(((uint32_t)value << 16) | (uint32_t)((s != 0) << 11) | (uint32_t)(advance << 4));
}

ALWAYS_INLINE int next_dc(bitreader *r, const htable *dc, int *diff) {
    if (r->bits < 32) br_fill(r);
    int32_t e = dc->fast[r->buf >> (64 - LOOKAHEAD)];
    if (e) {
        r->buf <<= (e & 15);
        r->bits -= (e & 15);
        *diff = e >> 16;
        return J8_OK;
    }
    int s = decode_sym(r, dc);
    if (s < 0) return J8_BAD_CODE;
    *diff = 0;
    if (s) {
        int v = br_get(r, s);
        *diff = EXTEND(v, s);
    }
    return J8_OK;
}

/* One block: DC difference into rec[0], kept AC terms into rec[keep[k]], the rest of rec zeroed.
 * Returns 1 when a non-zero AC term was kept, 0 when none, J8_BAD_CODE on a code no table has. */
ALWAYS_INLINE int decode_block(bitreader *r, const slotdef *sd, int16_t *rec) {
    int diff;
    if (next_dc(r, sd->dc, &diff)) return J8_BAD_CODE;
    rec[0] = (int16_t)diff;
    const htable *ac = sd->ac;
    if (sd->terms == 1) { /* nothing kept: only where the block ends matters */
        for (int k = 1; k < 64;) {
            int32_t e = next_ac(r, ac);
            if (!e) return J8_BAD_CODE;
            k += (e >> 4) & 127;
        }
        return 0;
    }
    int16_t dummy[1];
    int any = 0;
    memset(rec + 1, 0, 24 * sizeof(int16_t));
    for (int k = 1; k < 64;) {
        int32_t e = next_ac(r, ac);
        if (!e) return J8_BAD_CODE;
        int advance = (e >> 4) & 127;
        int at = k + advance - 1; /* where a value goes (libjpeg: past 63, at 63) */
        int idx = (e & 0x800) ? sd->keep[at > 63 ? 63 : at] : -1;
        int16_t *dst = idx > 0 ? rec + idx : dummy;
        *dst = (int16_t)(e >> 16);
        any |= idx > 0 && (e >> 16) != 0;
        k += advance;
    }
    return any;
}

/* ------------------------------------------------------------------ reduced IDCT (jidctred.c) */

static inline uint8_t range_limit(long x) { /* IDCT_range_limit(cinfo)[x & RANGE_MASK] */
    int i = (int)(x & 1023);
    return (uint8_t)(i < 128 ? 128 + i : i < 512 ? 255 : i < 896 ? 0 : i - 896);
}

/* Block with absolute DC in rec[0], of the MCU at (my, mx) -> its s x s samples in the plane.
 * any_ac: some kept AC term may be non-zero (0: the 2x2 output is the DC alone, same arithmetic).
 * Returns 1 when a 2x2 block leaves the range in which libjpeg's C jpeg_idct_2x2 and its SSE2 twin
 * (16-bit lanes: wrapping dequantization, saturating packs) agree: dequantized terms and the work array
 * within int16, outputs within [-512, 511] (where the C range limit is a plain clamp).  Valid photos
 * never get there; corrupt ones may, and are then left to Pillow. */
#define IN16(x) ((x) >= -32768 && (x) <= 32767)
ALWAYS_INLINE int finish_block(const scan *sc, const slotdef *sd, long my, long mx, const int16_t *rec, int any_ac) {
    const compdef *c = &sc->comps[sd->comp];
    long row = my * c->v + sd->vv, col = mx * c->h + sd->hh; /* one component: h = v = 1, vv = hh = 0 */
    if (c->s == 1) { /* jpeg_idct_1x1 (plain C in libjpeg-turbo) */
        long dcval = (long)rec[0] * c->q[0];
        c->plane[row * c->pw + col] = range_limit((dcval + 4) >> 3);
        return 0;
    }
    uint8_t *out = c->plane + (row * 2) * c->pw + col * 2;
    if (!any_ac) { /* every column and row takes the zero shortcut: ((4 * dc + 16) >> 5) */
        long d0 = (long)rec[0] * c->q[0], x = (d0 * 4 + 16) >> 5;
        out[0] = out[1] = out[c->pw] = out[c->pw + 1] = range_limit(x);
        return !IN16(d0) || !IN16(d0 * 4) || x < -512 || x > 511;
    }
    /* jpeg_idct_2x2: terms at rows/cols 0,1,3,5,7, kept as rec[5 * row + col] */
    long ws[2][5];
    int bad = 0;
    for (int j = 0; j < 5; j++) {
        long d0 = (long)rec[j] * c->q[j], d1 = (long)rec[5 + j] * c->q[5 + j], d3 = (long)rec[10 + j] * c->q[10 + j],
             d5 = (long)rec[15 + j] * c->q[15 + j], d7 = (long)rec[20 + j] * c->q[20 + j];
        bad |= !IN16(d0) || !IN16(d1) || !IN16(d3) || !IN16(d5) || !IN16(d7);
        if (d1 == 0 && d3 == 0 && d5 == 0 && d7 == 0) {
            ws[0][j] = ws[1][j] = d0 * 4; /* LEFT_SHIFT(dcval, PASS1_BITS) */
        } else {
            long tmp10 = d0 * (1L << 15);
            long tmp0 = d7 * -5906 + d5 * 6967 + d3 * -10426 + d1 * 29692;
            ws[0][j] = (tmp10 + tmp0 + (1L << 12)) >> 13;
            ws[1][j] = (tmp10 - tmp0 + (1L << 12)) >> 13;
        }
        bad |= !IN16(ws[0][j]) || !IN16(ws[1][j]);
    }
    for (int i = 0; i < 2; i++, out += c->pw) {
        long *w = ws[i], x0, x1;
        if (w[1] == 0 && w[2] == 0 && w[3] == 0 && w[4] == 0) {
            x0 = x1 = (w[0] + 16) >> 5;
        } else {
            long tmp10 = w[0] * (1L << 15);
            long tmp0 = w[4] * -5906 + w[3] * 6967 + w[2] * -10426 + w[1] * 29692;
            x0 = (tmp10 + tmp0 + (1L << 19)) >> 20;
            x1 = (tmp10 - tmp0 + (1L << 19)) >> 20;
        }
        out[0] = range_limit(x0);
        out[1] = range_limit(x1);
        bad |= x0 < -512 || x0 > 511 || x1 < -512 || x1 > 511;
    }
    return bad;
}

/* DC difference -> absolute value (int arithmetic wraps, the stored value is 16 bits, as in libjpeg) */
ALWAYS_INLINE void make_absolute(int16_t *rec, unsigned int *pred) {
    *pred += (unsigned int)(int)rec[0];
    rec[0] = (int16_t)(int)*pred;
}

/* Walks blocks in scan order without divisions. */
typedef struct {
    long my, mx;
    int slot;
} cursor;

static inline cursor cursor_at(const scan *sc, long b) {
    long mcu = b / sc->bpm;
    cursor c = {mcu / sc->mcus_x, mcu % sc->mcus_x, (int)(b % sc->bpm)};
    return c;
}

static inline void cursor_next(const scan *sc, cursor *c) {
    if (++c->slot == sc->bpm) {
        c->slot = 0;
        if (++c->mx == sc->mcus_x) {
            c->mx = 0;
            c->my++;
        }
    }
}

/* Decode global blocks [b0, b1) from the reader's position straight to samples. */
static int decode_to_planes(const scan *sc, bitreader *r, long b0, long b1, unsigned int *pred) {
    int16_t rec[32];
    int bad = 0;
    cursor cu = cursor_at(sc, b0);
    for (long b = b0; b < b1; b++) {
        const slotdef *sd = &sc->slots[cu.slot];
        int rc = decode_block(r, sd, rec);
        if (rc < 0) return rc;
        make_absolute(rec, &pred[sd->comp]);
        bad |= finish_block(sc, sd, cu.my, cu.mx, rec, rc);
        cursor_next(sc, &cu);
    }
    return bad ? J8_RANGE : J8_OK;
}

/* --------------------------------------------------------------------- restart-interval mode */

typedef struct {
    const scan *sc;
    long i0, i1; /* intervals */
    int rc;
} interval_job;

static void *run_intervals(void *arg) {
    interval_job *job = (interval_job *)arg;
    const scan *sc = job->sc;
    job->rc = J8_OK;
    for (long i = job->i0; i < job->i1; i++) {
        size_t start = sc->rst_off[i];
        size_t end = (i + 1 < sc->n_intervals) ? sc->rst_off[i + 1] : sc->n;
        bitreader r;
        br_init(&r, sc->data, end, start);
        unsigned int pred[4] = {0, 0, 0, 0};
        long m1 = (i + 1) * sc->restart;
        if (m1 > sc->total_mcus) m1 = sc->total_mcus;
        int rc = decode_to_planes(sc, &r, i * sc->restart * sc->bpm, m1 * sc->bpm, pred);
        if (!rc && br_bitpos(&r) > (uint64_t)end * 8) rc = J8_OVERRUN;
        if (rc) {
            job->rc = rc;
            return NULL;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------- speculative mode */

#define RING 64

typedef struct {
    const scan *sc;
    size_t start_byte;
    int16_t *scratch;     /* records by local MCU */
    long cap;             /* blocks the scratch holds */
    uint64_t window[WINDOW]; /* bit position of the first local blocks' starts */
    uint64_t ring[RING];  /* ... and of the last ones' (ring[j % RING] for block j; the end after the last) */
    long count;           /* blocks decoded (it stops early on a bad code: the joining thread then finishes) */
    atomic_long wcount;   /* window entries the other thread may read (stored before window_ready) */
    atomic_int window_ready;
    atomic_int cancel;
} spec_job;

static void *run_speculative(void *arg) {
    spec_job *job = (spec_job *)arg;
    const scan *sc = job->sc;
    const uint64_t total_bits = (uint64_t)sc->n * 8;
    bitreader r;
    br_init(&r, sc->data, sc->n, job->start_byte);
    long j = 0, lm = 0;
    int slot = 0;
    while (j < job->cap) {
        uint64_t pos = br_bitpos(&r);
        job->ring[j % RING] = pos;
        if (pos >= total_bits) break;
        if (j < WINDOW) {
            job->window[j] = pos;
        } else if (j == WINDOW) {
            atomic_store_explicit(&job->wcount, WINDOW, memory_order_relaxed);
            atomic_store_explicit(&job->window_ready, 1, memory_order_release);
        }
        if ((j & 255) == 0 && atomic_load_explicit(&job->cancel, memory_order_relaxed)) break;
        const slotdef *sd = &sc->slots[slot];
        int16_t *q = job->scratch + lm * sc->rec + sd->off;
        int rc = decode_block(&r, sd, q);
        if (rc < 0) break;
        if (sd->terms > 1) q[25] = (int16_t)rc;
        j++;
        if (++slot == sc->bpm) {
            slot = 0;
            lm++;
        }
    }
    job->ring[j % RING] = br_bitpos(&r);
    job->count = j;
    if (!atomic_load_explicit(&job->window_ready, memory_order_relaxed)) {
        atomic_store_explicit(&job->wcount, j < WINDOW ? j : WINDOW, memory_order_relaxed);
        atomic_store_explicit(&job->window_ready, 1, memory_order_release);
    }
    return NULL;
}

/* Finish blocks [b0, b1) from records whose DC terms are already absolute. */
typedef struct {
    const scan *sc;
    const int16_t *lrec; /* record of the MCU holding block b0 */
    cursor cur;          /* position of block b0 */
    long b0, b1;
    int bad;
} finish_job;

static void *run_finish(void *arg) {
    finish_job *f = (finish_job *)arg;
    const scan *sc = f->sc;
    cursor cu = f->cur;
    const int16_t *lrec = f->lrec;
    f->bad = 0;
    for (long g = f->b0; g < f->b1; g++, cursor_next(sc, &cu)) {
        const slotdef *sd = &sc->slots[cu.slot];
        const int16_t *q = lrec + sd->off;
        f->bad |= finish_block(sc, sd, cu.my, cu.mx, q, sd->terms > 1 && q[25]);
        if (cu.slot == sc->bpm - 1) lrec += sc->rec;
    }
    return NULL;
}

static int decode_speculative(const scan *sc, long split, long *synced_at) {
    const long total = sc->total_mcus * sc->bpm;
    const uint64_t total_bits = (uint64_t)sc->n * 8;
    const int bpm = sc->bpm;
    spec_job *job = (spec_job *)calloc(1, sizeof(spec_job));
    if (!job) return J8_NOMEM;
    job->sc = sc;
    job->start_byte = (size_t)((unsigned long long)sc->n * (unsigned long long)split / 1000ULL);
    job->cap = total;
    job->scratch = (int16_t *)malloc(((size_t)sc->total_mcus + 1) * (size_t)sc->rec * sizeof(int16_t));
    if (!job->scratch) {
        free(job);
        return J8_NOMEM;
    }
    atomic_init(&job->wcount, 0);
    atomic_init(&job->window_ready, 0);
    atomic_init(&job->cancel, 0);
    pthread_t th;
    int started = pthread_create(&th, NULL, run_speculative, job) == 0;
    if (!started) atomic_store(&job->cancel, 1); /* no second thread: decode it all here */

    const uint64_t meet_from = (uint64_t)job->start_byte * 8;
    unsigned int pred[4] = {0, 0, 0, 0};
    int16_t rec[32];
    bitreader r;
    br_init(&r, sc->data, sc->n, 0);
    long b = 0, p = 0, synced = -1;
    int rc = J8_OK, looking = started, bad_a = 0;
    cursor cu = {0, 0, 0};
    for (; b < total; b++, cursor_next(sc, &cu)) {
        if (looking) {
            uint64_t pos = br_bitpos(&r);
            if (pos >= meet_from) {
                while (!atomic_load_explicit(&job->window_ready, memory_order_acquire)) sched_yield();
                long limit = atomic_load_explicit(&job->wcount, memory_order_relaxed);
                while (p < limit && job->window[p] < pos) p++;
                if (p >= limit) {
                    looking = 0; /* never met: decode the rest here */
                    atomic_store_explicit(&job->cancel, 1, memory_order_relaxed);
                } else if (job->window[p] == pos && (p % bpm) == cu.slot) {
                    synced = b;
                    break;
                }
            }
        }
        const slotdef *sd = &sc->slots[cu.slot];
        rc = decode_block(&r, sd, rec);
        if (rc < 0) break;
        make_absolute(rec, &pred[sd->comp]);
        bad_a |= finish_block(sc, sd, cu.my, cu.mx, rec, rc);
        rc = J8_OK;
    }
    if (started) pthread_join(th, NULL);
    *synced_at = synced;
    if (!rc && synced >= 0) {
        long need = p + (total - synced); /* local blocks the other thread must have decoded */
        if (job->count >= need && job->count - need < RING && job->ring[need % RING] <= total_bits) {
            /* DC terms made absolute in order, then the blocks finished on both threads */
            int16_t *first = job->scratch + (p / bpm) * sc->rec;
            cursor c0 = cu;
            int16_t *lrec = first;
            for (long g = synced; g < total; g++, cursor_next(sc, &cu)) {
                const slotdef *sd = &sc->slots[cu.slot];
                make_absolute(lrec + sd->off, &pred[sd->comp]);
                if (cu.slot == bpm - 1) lrec += sc->rec;
            }
            finish_job fa = {sc, first, c0, synced, total, 0}, fb = fa;
            long mid = synced + (total - synced) / 2;
            mid -= mid % bpm; /* an MCU boundary */
            pthread_t th2;
            int two = 0;
            if (mid > synced) {
                fa.b1 = mid;
                fb.b0 = mid;
                fb.cur = cursor_at(sc, mid);
                fb.lrec = first + ((mid - synced + c0.slot) / bpm) * sc->rec;
                two = pthread_create(&th2, NULL, run_finish, &fb) == 0;
                if (!two) fa.b1 = total;
            }
            run_finish(&fa);
            if (two) pthread_join(th2, NULL);
            if (fa.bad || fb.bad) rc = J8_RANGE;
        } else if (job->count >= need) {
            rc = J8_OVERRUN;
        } else {
            /* the other thread stopped early (bad code, end of data): finish here from where we met */
            *synced_at = -1;
            rc = decode_to_planes(sc, &r, synced, total, pred);
            if (!rc && br_bitpos(&r) > total_bits) rc = J8_OVERRUN;
        }
    } else if (!rc && br_bitpos(&r) > total_bits) {
        rc = J8_OVERRUN;
    }
    if (!rc && bad_a) rc = J8_RANGE;
    free(job->scratch);
    free(job);
    return rc;
}

/* ---------------------------------------------------------------------------- destuffing */

/* Copy the entropy-coded bytes (0xFF00 -> 0xFF), note where restart intervals start, stop at EOI. */
static int destuff(const uint8_t *in, size_t n, uint8_t *out, size_t *out_n, size_t *rst_off, long max_rst,
                   long *n_rst, int restart) {
    size_t i = 0, j = 0;
    long k = 0;
    while (i < n) {
        const uint8_t *ff = memchr(in + i, 0xFF, n - i);
        size_t run = ff ? (size_t)(ff - (in + i)) : n - i;
        memcpy(out + j, in + i, run);
        i += run;
        j += run;
        if (!ff) break;
        if (i + 1 >= n) return J8_NO_EOI;
        uint8_t m = in[i + 1];
        if (m == 0x00) {
            out[j++] = 0xFF;
            i += 2;
        } else if (m == 0xFF) {
            i += 1; /* fill byte */
        } else if (m >= 0xD0 && m <= 0xD7) {
            if (!restart || k + 1 >= max_rst || m != 0xD0 + (k % 8)) return J8_RESTART;
            rst_off[++k] = j;
            i += 2;
        } else if (m == 0xD9) {
            *out_n = j;
            *n_rst = k;
            return J8_OK;
        } else {
            return J8_MARKER;
        }
    }
    return J8_NO_EOI;
}

/* -------------------------------------------------------------------- colour (jdcolor.c) */

static int cr_r_tab[256], cb_b_tab[256];
static long cr_g_tab[256], cb_g_tab[256];

static void build_ycc_tables(void) {
#define FIX16(x) ((long)((x) * (1L << 16) + 0.5))
    for (int i = 0; i < 256; i++) {
        long x = i - 128;
        cr_r_tab[i] = (int)((FIX16(1.40200) * x + (1L << 15)) >> 16);
        cb_b_tab[i] = (int)((FIX16(1.77200) * x + (1L << 15)) >> 16);
        cr_g_tab[i] = -FIX16(0.71414) * x;
        cb_g_tab[i] = -FIX16(0.34414) * x + (1L << 15);
    }
#undef FIX16
}

static inline uint8_t clamp255(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Planes -> rows [y0, y1) of the output image (out_h x out_w x ncomp), chroma replicated
 * (h2v1/h2v2_upsample), YCbCr -> RGB as ycc_rgb_convert. */
typedef struct {
    const scan *sc;
    uint8_t *out;
    long out_w, y0, y1;
    int hmax, vmax;
} image_job;

static void *run_image(void *arg) {
    const image_job *j = (const image_job *)arg;
    const scan *sc = j->sc;
    const long out_w = j->out_w;
    if (sc->ncomp == 1) {
        const compdef *c = &sc->comps[0];
        for (long y = j->y0; y < j->y1; y++) memcpy(j->out + y * out_w, c->plane + y * c->pw, (size_t)out_w);
        return NULL;
    }
    const compdef *cy = &sc->comps[0], *cb = &sc->comps[1], *cr = &sc->comps[2];
    int sx[3], sy[3]; /* upsampling factors 1 or 2, as shifts */
    for (int k = 0; k < 3; k++) {
        sx[k] = j->hmax / (sc->comps[k].h * sc->comps[k].s) == 2;
        sy[k] = j->vmax / (sc->comps[k].v * sc->comps[k].s) == 2;
    }
    for (long y = j->y0; y < j->y1; y++) {
        const uint8_t *py = cy->plane + (y >> sy[0]) * cy->pw;
        const uint8_t *pb = cb->plane + (y >> sy[1]) * cb->pw;
        const uint8_t *pr = cr->plane + (y >> sy[2]) * cr->pw;
        uint8_t *o = j->out + y * out_w * 3;
        for (long x = 0; x < out_w; x++, o += 3) {
            int Y = py[x >> sx[0]], Cb = pb[x >> sx[1]], Cr = pr[x >> sx[2]];
            o[0] = clamp255(Y + cr_r_tab[Cr]);
            o[1] = clamp255(Y + (int)((cb_g_tab[Cb] + cr_g_tab[Cr]) >> 16));
            o[2] = clamp255(Y + cb_b_tab[Cb]);
        }
    }
    return NULL;
}

static void to_image(const scan *sc, uint8_t *out, long out_w, long out_h, int hmax, int vmax, int threads) {
    image_job a = {sc, out, out_w, 0, out_h, hmax, vmax}, b = a;
    pthread_t th;
    int two = 0;
    if (threads >= 2 && out_h >= 64) {
        a.y1 = b.y0 = out_h / 2;
        two = pthread_create(&th, NULL, run_image, &b) == 0;
        if (!two) a.y1 = out_h;
    }
    run_image(&a);
    if (two) pthread_join(th, NULL);
}

/* ------------------------------------------------------------------------------ Python API */

PyDoc_STRVAR(decode_doc,
"decode(data, tables, slots, comps, mcus_x, total_mcus, restart, threads, out, out_w, out_h, split=500)\n"
"  -> (status, synced_at)\n\n"
"data: the bytes after the SOS header (entropy-coded data, then EOI and anything after).\n"
"tables: 8 x 272 bytes: 4 DC then 4 AC tables, each 16 code counts then 256 symbol bytes.\n"
"slots: per block of an MCU, 72 bytes: dc table, ac table, component, samples per side (1|2),\n"
"  column and row of the block in its component's part of the MCU, record offset (uint16 LE),\n"
"  then 64 signed bytes: zigzag index -> record position (-1: not kept); records hold 1 term\n"
"  per block of 1 sample, 26 per block of 2 (25 terms, a flag), in slot order.\n"
"comps: per component, 28 int32: h, v, samples per side, then the 25 quantization values of the\n"
"  kept terms (rows/cols 0,1,3,5,7 in natural order; only the first matters for 1 sample).\n"
"out: writable, out_h x out_w x ncomp bytes with out_w = ceil(width / 8), out_h = ceil(height / 8),\n"
"  given as the last two arguments.\n"
"status 0: decoded; negative: not decodable here (the caller falls back to a full decoder).\n"
"synced_at: global block where the two threads met (-1 if they did not, or one thread ran).\n"
"split: where the second thread starts without restart markers, in thousandths of the data.");

static PyObject *py_decode(PyObject *self, PyObject *args) {
    Py_buffer data, tables, slots, comps, out;
    int threads;
    long mcus_x, total_mcus, restart, out_w, out_h, split = DEFAULT_SPLIT;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*llliw*ll|l", &data, &tables, &slots, &comps, &mcus_x, &total_mcus, &restart,
                          &threads, &out, &out_w, &out_h, &split))
        return NULL;
    int rc = J8_OK;
    long synced_at = -1;
    scan *sc = NULL;
    uint8_t *clean = NULL, *planes = NULL;
    size_t *rst_off = NULL;
    int bpm = (int)(slots.len / 72);
    int ncomp = (int)(comps.len / (28 * 4));
    if (tables.len != 8 * 272 || slots.len % 72 || bpm < 1 || bpm > MAX_SLOTS || comps.len % (28 * 4) ||
        (ncomp != 1 && ncomp != 3) || mcus_x < 1 || total_mcus < 1 || total_mcus % mcus_x || restart < 0 ||
        restart > 65535 || out_w < 1 || out_h < 1 || split < 1 || split > 999 || total_mcus > (1L << 30) / bpm ||
        (unsigned long long)out.len != (unsigned long long)out_w * (unsigned long long)out_h * (unsigned)ncomp) {
        rc = J8_ARGS;
        goto done;
    }
    sc = (scan *)calloc(1, sizeof(scan));
    if (!sc) {
        rc = J8_NOMEM;
        goto done;
    }
    sc->bpm = bpm;
    sc->ncomp = ncomp;
    sc->mcus_x = mcus_x;
    sc->total_mcus = total_mcus;
    sc->restart = restart;
    const long mcus_y = total_mcus / mcus_x;
    int hmax = 1, vmax = 1;
    const int32_t *cq = (const int32_t *)comps.buf;
    for (int k = 0; k < ncomp; k++) {
        compdef *c = &sc->comps[k];
        c->h = cq[28 * k];
        c->v = cq[28 * k + 1];
        c->s = cq[28 * k + 2];
        memcpy(c->q, cq + 28 * k + 3, sizeof c->q);
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4 || (c->s != 1 && c->s != 2) || (ncomp == 1 && c->s != 1)) {
            rc = J8_ARGS;
            goto done;
        }
        if (c->h > hmax) hmax = c->h;
        if (c->v > vmax) vmax = c->v;
        long bw = ncomp == 1 ? mcus_x : mcus_x * c->h, bh = ncomp == 1 ? mcus_y : mcus_y * c->v;
        c->pw = bw * c->s;
        c->ph = bh * c->s;
    }
    for (int k = 0; k < ncomp; k++) { /* the planes must cover the output once upsampled */
        compdef *c = &sc->comps[k];
        int fx = hmax / (c->h * c->s), fy = vmax / (c->v * c->s);
        if (hmax % (c->h * c->s) || vmax % (c->v * c->s) || fx > 2 || fy > 2 || c->pw * (hmax / (c->h * c->s)) < out_w ||
            c->ph * (vmax / (c->v * c->s)) < out_h) {
            rc = J8_ARGS;
            goto done;
        }
    }
    const uint8_t *tb = (const uint8_t *)tables.buf;
    int used[8] = {0};
    const uint8_t *sb = (const uint8_t *)slots.buf;
    int expect_off = 0;
    for (int s = 0; s < bpm; s++) {
        const uint8_t *q = sb + 72 * s;
        slotdef *sd = &sc->slots[s];
        int dc = q[0], ac = q[1], comp = q[2];
        sd->s = q[3];
        sd->hh = q[4];
        sd->vv = q[5];
        sd->off = q[6] | (q[7] << 8);
        sd->terms = sd->s == 1 ? 1 : 26;
        if (dc > 3 || ac > 3 || comp >= ncomp || sd->s != sc->comps[comp].s || sd->hh >= sc->comps[comp].h ||
            sd->vv >= sc->comps[comp].v || sd->off != expect_off) {
            rc = J8_ARGS;
            goto done;
        }
        expect_off += sd->terms;
        sd->dc = &sc->tables[dc];
        sd->ac = &sc->tables[4 + ac];
        sd->comp = comp;
        for (int k = 0; k < 64; k++) {
            int8_t v = (int8_t)q[8 + k]; /* zigzag 0 is always the DC, position 0 */
            if (k == 0) v = 0;
            if (v >= 25 || (sd->s == 1 && v > 0)) {
                rc = J8_ARGS;
                goto done;
            }
            sd->keep[k] = v;
        }
        used[dc] = 1;
        used[4 + ac] = 1;
    }
    sc->rec = expect_off;
    if (sc->rec > 32 * MAX_SLOTS) {
        rc = J8_ARGS;
        goto done;
    }
    for (int t = 0; t < 8; t++) {
        if (!used[t]) continue;
        const uint8_t *q = tb + 272 * t;
        rc = build_table(&sc->tables[t], q, q + 16, t < 4);
        if (rc) goto done;
    }
    long n_intervals = restart ? (total_mcus + restart - 1) / restart : 1;
    clean = (uint8_t *)malloc((size_t)data.len + 8);
    rst_off = (size_t *)calloc((size_t)n_intervals + 1, sizeof(size_t));
    size_t plane_bytes = 0;
    for (int k = 0; k < ncomp; k++) plane_bytes += (size_t)(sc->comps[k].pw * sc->comps[k].ph);
    planes = (uint8_t *)malloc(plane_bytes);
    if (planes) {
        uint8_t *at = planes;
        for (int k = 0; k < ncomp; k++) {
            sc->comps[k].plane = at;
            at += sc->comps[k].pw * sc->comps[k].ph;
        }
    }
    if (!clean || !rst_off || !planes) {
        rc = J8_NOMEM;
        goto done;
    }
    sc->rst_off = rst_off;
    sc->n_intervals = n_intervals;
    Py_BEGIN_ALLOW_THREADS
    long n_rst = 0;
    size_t n = 0;
    rc = destuff((const uint8_t *)data.buf, (size_t)data.len, clean, &n, rst_off, n_intervals + 1, &n_rst, restart > 0);
    if (!rc && restart && n_rst != n_intervals - 1) rc = J8_RESTART;
    if (!rc) {
        sc->data = clean;
        sc->n = n;
        if (restart) {
            interval_job a = {sc, 0, n_intervals, 0}, b2 = {sc, 0, 0, 0};
            pthread_t th;
            int started = 0;
            if (threads >= 2 && n_intervals >= 2) {
                a.i1 = n_intervals / 2;
                b2.i0 = a.i1;
                b2.i1 = n_intervals;
                started = pthread_create(&th, NULL, run_intervals, &b2) == 0;
                if (!started) a.i1 = n_intervals;
            }
            run_intervals(&a);
            if (started) pthread_join(th, NULL);
            rc = a.rc ? a.rc : b2.rc;
        } else if (threads >= 2 && n >= 8192) {
            rc = decode_speculative(sc, split, &synced_at);
        } else {
            bitreader r;
            unsigned int pred[4] = {0, 0, 0, 0};
            br_init(&r, clean, n, 0);
            rc = decode_to_planes(sc, &r, 0, total_mcus * bpm, pred);
            if (!rc && br_bitpos(&r) > (uint64_t)n * 8) rc = J8_OVERRUN;
        }
        if (!rc) to_image(sc, (uint8_t *)out.buf, out_w, out_h, hmax, vmax, threads);
    }
    Py_END_ALLOW_THREADS
done:
    free(planes);
    free(clean);
    free(rst_off);
    free(sc);
    PyBuffer_Release(&data);
    PyBuffer_Release(&tables);
    PyBuffer_Release(&slots);
    PyBuffer_Release(&comps);
    PyBuffer_Release(&out);
    return Py_BuildValue("il", rc, synced_at);
}

static PyMethodDef methods[] = {
    {"decode", py_decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_jpeg8", "Two-thread entropy decoding of baseline JPEG scans for 1/8-scale output.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jpeg8(void) {
    build_ycc_tables();
    PyObject *m = PyModule_Create(&moduledef);
    if (m && PyModule_AddIntConstant(m, "DEFAULT_SPLIT", DEFAULT_SPLIT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
