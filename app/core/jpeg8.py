"""JPEG decoding at 1/8 scale on two cores: header parsing here, the rest in the ``_jpeg8`` C module.

At 1/8 scale, libjpeg (inside Pillow) still Huffman-decodes every coefficient of a 12 MP photo on one
core (about 10 ms for 0.8 MB here), then keeps almost nothing: one pixel per 8x8 block.  ``_jpeg8.c``
does the same entropy decoding on two threads (its header says how the scan is split), keeping only the
terms the reduced inverse DCT needs, and finishes with **libjpeg's own integer arithmetic**
(``jpeg_idct_1x1``, ``jpeg_idct_2x2`` of ``jidctred.c``, ``ycc_rgb_convert`` of ``jdcolor.c``), so the
pixels are the ones Pillow's draft mode gives — the tests check it bit for bit.  This module reads the
markers and tables and lays out what the C module needs (pure Python: about 0.1 ms for the 12 MP file).

It takes baseline and extended-sequential Huffman JPEGs, 8-bit, greyscale or YCbCr with 4:4:4, 4:2:2
or 4:2:0 sampling, with or without restart markers: what cameras and phones write.  Anything else —
progressive, arithmetic-coded, CMYK, Adobe RGB, a missing table, a truncated or corrupt scan, a header that
libjpeg would refuse (its fatal checks on segment lengths and sizes are repeated here) — returns ``None`` and
the caller decodes with Pillow as before (which then also gives the error, if any).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

try:  # the compiled part is optional: without it every JPEG goes to Pillow
    from app.core import _jpeg8 as _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised only where the extension was not built
    _native = None

AVAILABLE = _native is not None
SCALE = 8

# jpeg_natural_order: zigzag position -> natural (row-major) index
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
     21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60,
     61, 54, 47, 55, 62, 63],
    dtype=np.intp,
)
_RED = (0, 1, 3, 5, 7)  # rows and columns of the coefficients jpeg_idct_2x2 reads
_RED_AT = np.ravel_multi_index(np.ix_(_RED, _RED), (8, 8)).ravel()  # their natural indices, 5 x 5 row-major


def _keep_map(s: int) -> bytes:
    """Zigzag index -> position in a block's record (-1: dropped): the DC alone, or jpeg_idct_2x2's 25 terms."""
    keep = np.full(64, -1, dtype=np.int8)
    keep[0] = 0
    if s == 2:
        where = {int(n): k for k, n in enumerate(_RED_AT)}
        for zz, n in enumerate(_ZIGZAG):
            keep[zz] = where.get(int(n), -1)
    return keep.tobytes()


_KEEP = {1: _keep_map(1), 2: _keep_map(2)}
_MAX_SIDE = 65500  # JPEG_MAX_DIMENSION
# marker segments this parser reads or skips before the scan: SOF0-15, DHT, DAC, DQT, DRI, SOS, EOI, APP0-15, COM
_SEGMENTS = frozenset([*range(0xC0, 0xD0), 0xD9, 0xDA, 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE])


@dataclass(frozen=True)
class Component:
    h: int
    v: int
    q: npt.NDArray[np.int64]  # 64 quantization values, natural order
    dc: int
    ac: int


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    comps: tuple[Component, ...]
    restart: int
    tables: bytes  # 8 x 272: DC 0-3 then AC 0-3, counts + symbols
    scan_offset: int


def _be16(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


class _NotTaken(Exception):
    """The file is not one this decoder takes (Pillow decodes it)."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def parse_header(data: bytes) -> Header | None:
    """The frame, tables and scan layout, or None when this decoder does not take the file."""
    try:
        return _parse(data)
    except (_NotTaken, IndexError, ValueError):
        return None


def _parse(data: bytes) -> Header:
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise _NotTaken
    i = 2
    sof: tuple[int, int, list[tuple[int, int, int, int]]] | None = None
    qt: dict[int, npt.NDArray[np.int64]] = {}
    huff: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    restart = 0
    jfif = adobe = False
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise _NotTaken
        m = data[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m not in _SEGMENTS:
            raise _NotTaken  # TEM, RSTn, a second SOI, DNL, JPG extensions, unknown codes: rare, left to libjpeg
        length = _be16(data, i + 2)
        end = i + 2 + length
        if length < 2 or end > n:
            raise _NotTaken
        seg = data[i + 4 : end]
        if m in (0xC0, 0xC1):
            if sof is not None or len(seg) < 6 or seg[0] != 8:
                raise _NotTaken
            h, w, nf = _be16(seg, 1), _be16(seg, 3), seg[5]
            # as libjpeg's get_sof: exact length, no empty or over-large image (JERR_BAD_LENGTH, _EMPTY_IMAGE,
            # _IMAGE_TOO_BIG are fatal there: Pillow then refuses the file, and so must we)
            if not (0 < h <= _MAX_SIDE and 0 < w <= _MAX_SIDE) or nf not in (1, 3) or len(seg) != 6 + 3 * nf:
                raise _NotTaken
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k]) for k in range(nf)]
            if len({c[0] for c in comps}) != nf:
                raise _NotTaken  # repeated component ids: libjpeg's own repair, left to it
            sof = (w, h, comps)
        elif 0xC2 <= m <= 0xCF and m not in (0xC4, 0xC8):
            raise _NotTaken  # progressive, lossless, arithmetic (DAC included) or hierarchical
        elif m == 0xC4:
            p = 0
            while p < len(seg):
                if p + 17 > len(seg):
                    raise _NotTaken
                tc, th = seg[p] >> 4, seg[p] & 15
                counts = seg[p + 1 : p + 17]
                total = sum(counts)
                if tc > 1 or th > 3 or total > 256 or p + 17 + total > len(seg):
                    raise _NotTaken
                huff[(tc, th)] = (bytes(counts), bytes(seg[p + 17 : p + 17 + total]))
                p += 17 + total
        elif m == 0xDB:
            p = 0
            while p < len(seg):
                pq, tq = seg[p] >> 4, seg[p] & 15
                size = 64 * (pq + 1)
                if pq > 1 or tq > 3 or p + 1 + size > len(seg):
                    raise _NotTaken
                raw = np.frombuffer(seg, dtype=">u2" if pq else np.uint8, count=64, offset=p + 1).astype(np.int64)
                nat = np.empty(64, dtype=np.int64)
                nat[_ZIGZAG] = raw
                qt[tq] = nat
                p += 1 + size
        elif m == 0xDD:
            if len(seg) != 2:  # get_dri: length must be 4
                raise _NotTaken
            restart = _be16(seg, 0)
        elif m == 0xE0 and seg[:5] == b"JFIF\x00":
            jfif = True
        elif m == 0xEE and seg[:5] == b"Adobe":
            adobe = True
        elif m == 0xDA:
            return _scan_header(sof, seg, end, qt, huff, restart, jfif, adobe)
        elif m == 0xD9:
            break
        i = end
    raise _NotTaken


def _scan_header(
    sof: tuple[int, int, list[tuple[int, int, int, int]]] | None,
    seg: bytes,
    end: int,
    qt: dict[int, npt.NDArray[np.int64]],
    huff: dict[tuple[int, int], tuple[bytes, bytes]],
    restart: int,
    jfif: bool,
    adobe: bool,
) -> Header:
    if sof is None or not seg:
        raise _NotTaken
    w, h, frame = sof
    ns = seg[0]
    if ns != len(frame) or len(seg) != 4 + 2 * ns:  # get_sos: length must be 6 + 2 Ns
        raise _NotTaken  # (and one scan per component, non-interleaved colour, is left to Pillow)
    ss, se, ahal = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns]
    if ss != 0 or se != 63 or ahal != 0:
        raise _NotTaken
    if len(frame) == 3:
        ids = tuple(c[0] for c in frame)
        if (adobe and not jfif) or (not jfif and ids == (82, 71, 66)):
            raise _NotTaken  # RGB, not YCbCr, in libjpeg's reading of the markers
        (_, hy, vy, _), (_, h1, v1, _), (_, h2, v2, _) = frame
        if (h1, v1, h2, v2) != (1, 1, 1, 1) or (hy, vy) not in ((1, 1), (2, 1), (2, 2)):
            raise _NotTaken
    tables = bytearray(8 * 272)
    comps = []
    for k, (cid, ch, cv, tq) in enumerate(frame):
        if seg[1 + 2 * k] != cid or tq not in qt or not (1 <= ch <= 4 and 1 <= cv <= 4):
            raise _NotTaken
        td, ta = seg[2 + 2 * k] >> 4, seg[2 + 2 * k] & 15
        if (0, td) not in huff or (1, ta) not in huff or td > 3 or ta > 3:
            raise _NotTaken  # libjpeg would use its default tables here (Motion-JPEG): left to Pillow
        for tc, th in ((0, td), (1, ta)):
            counts, vals = huff[(tc, th)]
            o = 272 * (4 * tc + th)
            tables[o : o + 16] = counts
            tables[o + 16 : o + 16 + len(vals)] = vals
        comps.append(Component(ch, cv, qt[tq], td, ta))
    return Header(w, h, tuple(comps), restart, bytes(tables), end)


def _scaled_size(hmax: int, vmax: int, c: Component) -> int:
    """libjpeg's DCT_scaled_size of a component at 1/8 (jdmaster.c: chroma scaled up by the IDCT)."""
    s = 1
    while s < 8 and hmax % (c.h * s * 2) == 0 and vmax % (c.v * s * 2) == 0:
        s *= 2
    return s


@dataclass(frozen=True)
class Layout:
    """How the scan's blocks map to records and samples (the C module's ``slots`` and ``comps``)."""

    mcus_x: int
    mcus_y: int
    slots: bytes
    comps: bytes


def layout(hd: Header) -> Layout | None:
    hmax = max(c.h for c in hd.comps)
    vmax = max(c.v for c in hd.comps)
    if len(hd.comps) == 1:  # one non-interleaved scan: an MCU is one block
        c = hd.comps[0]
        mcus_x = _ceil_div(_ceil_div(hd.width * c.h, hmax), 8)
        mcus_y = _ceil_div(_ceil_div(hd.height * c.v, vmax), 8)
    else:
        mcus_x, mcus_y = _ceil_div(hd.width, 8 * hmax), _ceil_div(hd.height, 8 * vmax)
    slots = bytearray()
    comps = []
    off = 0
    for k, c in enumerate(hd.comps):
        s = _scaled_size(hmax, vmax, c) if len(hd.comps) > 1 else 1
        if s not in (1, 2):
            return None
        comps.append(np.concatenate(([c.h, c.v, s], c.q[_RED_AT])).astype(np.int32))
        blocks = [(0, 0)] if len(hd.comps) == 1 else [(hh, vv) for vv in range(c.v) for hh in range(c.h)]
        for hh, vv in blocks:
            slots += bytes((c.dc, c.ac, k, s, hh, vv, off & 255, off >> 8)) + _KEEP[s]
            off += 1 if s == 1 else 26  # 25 terms and a flag
    return Layout(mcus_x, mcus_y, bytes(slots), np.concatenate(comps).tobytes())


def decode(data: bytes, threads: int = 2, *, split: int | None = None) -> npt.NDArray[np.uint8] | None:
    """The image at 1/8 scale, ``ceil(h/8) x ceil(w/8)`` (x 3 for colour), as libjpeg decodes it; or None.

    ``threads``: 1 or 2.  ``split`` (tests): where the second thread starts, in thousandths of the data;
    default ``_jpeg8.DEFAULT_SPLIT``, before the middle (``_jpeg8.c`` has the numbers).
    """
    return decode_info(data, threads, split=split)[0]


def decode_info(
    data: bytes, threads: int = 2, *, split: int | None = None
) -> tuple[npt.NDArray[np.uint8] | None, int]:
    """:func:`decode`, and the block where the two threads met (-1: they did not, or one ran)."""
    hd = parse_header(data) if _native is not None else None
    lay = layout(hd) if hd is not None else None
    if hd is None or lay is None:
        return None, -1
    out_w, out_h = _ceil_div(hd.width, SCALE), _ceil_div(hd.height, SCALE)
    out = np.empty((out_h, out_w, 3) if len(hd.comps) == 3 else (out_h, out_w), dtype=np.uint8)
    status, synced_at = _native.decode(
        memoryview(data)[hd.scan_offset :], hd.tables, lay.slots, lay.comps, lay.mcus_x,
        lay.mcus_x * lay.mcus_y, hd.restart, threads, out, out_w, out_h,
        _native.DEFAULT_SPLIT if split is None else split,
    )
    return (out if status == 0 else None), int(synced_at)
