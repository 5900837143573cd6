"""A corpus of hostile uploads, generated in memory (Pillow, numpy, struct, zlib): no files, no downloads.

Each :class:`Case` is a name, a zero-argument generator of the bytes (cached: the 7071x7071 ones take a
fraction of a second each to build), and the statuses a correct service may answer with.  A case whose
answer is certain (a pixel bomb is 413, a PNG magic over a JPEG body is 422) lists that one status; a case
that a decoder may legitimately either read or refuse (a truncated scan, a bogus ICC profile) lists all of
them.  Never 5xx: no upload may crash, bloat or stall the service, whatever its bytes.

The classes, and what each attacks:

* **memory**: small files that decode to large images (a 0.1 MB 16-bit PNG of 7071x7071, a G4 fax TIFF,
  an LZW GIF, an RLE BMP): the decode and every conversion must stay within the memory budget;
* **pixel bombs**: headers claiming more than ``LOCSVC_MAX_IMAGE_PIXELS`` (50,000,000): 413 from the
  header, before anything is allocated;
* **CPU**: files whose decoding or parsing is slow per byte (a progressive JPEG with thousands of scans,
  40,000 TIFF pages, 20,000 GIF frames, a BMP RLE of end-of-line escapes, 200,000 PNG IDAT chunks);
* **parser edge cases**: truncation at every stage, over-subscribed Huffman tables, odd sampling factors,
  IFD loops, metadata decompression bombs, lying length fields;
* **format confusion**: a magic number in front of another format's body (e.g. a PhotoCD image behind a
  TIFF magic: it must never be decoded as another format), polyglots, text, nothing.

:func:`seed_files` gives small valid files of every format, for the fuzz tests to mutate.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

OK = frozenset({200})
TOO_LARGE = frozenset({413})
UNSUPPORTED = frozenset({415})
INVALID = frozenset({422})
REFUSED = frozenset({413, 415, 422})
READ_OR_INVALID = frozenset({200, 422})
READ_OR_TOO_LARGE = frozenset({200, 413})
ANY_CLEAN = frozenset({200, 413, 415, 422})
NOT_DECODED = frozenset({415, 422})  # the bytes are not the format their magic says

MAX_PIXELS = 50_000_000  # LOCSVC_MAX_IMAGE_PIXELS, default
SIDE = 7071  # 7071 ** 2 = 49,999,041: the largest square image under the pixel limit


@dataclass(frozen=True)
class Case:
    """One hostile upload: ``make()`` gives its bytes (cached), ``expect`` the statuses a correct service may give.

    ``heavy``: decodes to tens of megabytes or more, or takes seconds of CPU (the memory and CPU cases): the
    quick in-process checks skip them.
    """

    name: str
    make: Callable[[], bytes]
    expect: frozenset[int]
    why: str
    heavy: bool = False

    @property
    def data(self) -> bytes:
        return self.make()

    @property
    def certain(self) -> int | None:
        """The one status a correct service must give, when that is known."""
        return next(iter(self.expect)) if len(self.expect) == 1 else None


CASES: list[Case] = []


def case(
    expect: frozenset[int], why: str, *, heavy: bool = False
) -> Callable[[Callable[[], bytes]], Callable[[], bytes]]:
    """Register a generator as a case (its name: the function's, without the leading underscore); cache its bytes."""

    def register(make: Callable[[], bytes]) -> Callable[[], bytes]:
        cached = functools.cache(make)
        CASES.append(Case(make.__name__.lstrip("_"), cached, expect, why, heavy))
        return cached

    return register


# --------------------------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """A smooth picture (compresses well, unlike noise), with some texture so that scans are not empty."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(1, w - 1)).astype(np.uint8)
    g = (y * 255 // max(1, h - 1)).astype(np.uint8)
    b = ((x // 16 + y // 16) % 2 * 96 + 64).astype(np.uint8)
    return Image.fromarray(np.dstack([r, g, b])).convert(mode)


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def deflate_zeros(n: int, level: int = 9) -> bytes:
    """``zlib.compress(bytes(n))`` without holding ``n`` bytes (about 1000:1)."""
    c = zlib.compressobj(level)
    block = bytes(1 << 20)
    parts = [c.compress(block) for _ in range(n >> 20)]
    parts += [c.compress(bytes(n & ((1 << 20) - 1))), c.flush()]
    return b"".join(parts)


def be16(v: int) -> bytes:
    return struct.pack(">H", v)


def le16(v: int) -> bytes:
    return struct.pack("<H", v)


def le32(v: int) -> bytes:
    return struct.pack("<I", v)


def le24(v: int) -> bytes:
    return struct.pack("<I", v)[:3]


class BitWriter:
    """MSB-first bit packing (JPEG entropy data: 0xFF stuffed with 0x00, padded with 1s)."""

    def __init__(self) -> None:
        self.acc = 0
        self.n = 0
        self.out = bytearray()

    def put(self, value: int, nbits: int) -> None:
        self.acc = (self.acc << nbits) | (value & ((1 << nbits) - 1))
        self.n += nbits
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self.acc &= (1 << self.n) - 1

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


# ------------------------------------------------------------------------------------------------ JPEG


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + be16(len(payload) + 2) + payload


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment from SOI up to and including SOS (start: its 0xFF)."""
    out = [(0xD8, 0, 2)]
    i = 2
    while i + 4 <= len(data):
        while data[i] == 0xFF and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        marker = data[i + 1]
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        out.append((marker, i, end))
        if marker == 0xDA:
            break
        i = end
    return out


def first_segment(data: bytes, markers: Iterable[int]) -> tuple[int, int, int]:
    wanted = set(markers)
    return next(s for s in jpeg_segments(data) if s[0] in wanted)


SOF_MARKERS = (0xC0, 0xC1, 0xC2)


def patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def with_sof_size(data: bytes, width: int, height: int) -> bytes:
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(data, start + 5, be16(height) + be16(width))


def insert_before(data: bytes, marker: int, new: bytes) -> bytes:
    _, start, _ = first_segment(data, [marker])
    return data[:start] + new + data[start:]


def exif_app1(entries: int, orientation: int = 6) -> bytes:
    """An APP1 Exif segment of ``entries`` IFD0 entries (near the 64 KB segment limit for ~5400), whose Exif
    and GPS IFD pointers point back at IFD0 (a loop), and a few entries whose data lies beyond the segment."""
    tags = [(0x0112, 3, 1, orientation << 16), (0x8769, 4, 1, 8), (0x8825, 4, 1, 8)]
    tags += [(0x010E, 2, 0x7FFFFFFF, 0xFFFFFF00), (0x9286, 7, 100000, 0x10)]  # data out of range
    tags += [(0xC000 + i, 4, 1, i) for i in range(entries - len(tags))]
    ifd = be16(len(tags)) + b"".join(struct.pack(">HHII", *t) for t in tags) + struct.pack(">I", 0)
    return jpeg_segment(0xE1, b"Exif\x00\x00MM\x00*" + struct.pack(">I", 8) + ifd)


def icc_app2(profile: bytes, chunk: int = 65519, count: int | None = None) -> bytes:
    pieces = [profile[i : i + chunk] for i in range(0, len(profile), chunk)]
    n = count if count is not None else len(pieces)
    return b"".join(jpeg_segment(0xE2, b"ICC_PROFILE\x00" + bytes([k + 1, n]) + p) for k, p in enumerate(pieces))


@functools.cache
def base_jpeg() -> bytes:
    """640x480 baseline colour JPEG with JFIF and Exif segments: every stage for the truncations."""
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "hostile-corpus"
    return encode(gradient(640, 480), "JPEG", quality=80, exif=exif.tobytes())


def truncated_at(marker: int, inside: bool) -> Callable[[], bytes]:
    def make() -> bytes:
        data = base_jpeg()
        _, start, end = first_segment(data, [marker])
        return data[: (start + end) // 2] if inside else data[:end]

    return make


@case(OK, "greyscale 2400x2400 whose one component claims 2x2 sampling (0x22): libjpeg still decodes it")
def _jpeg_grey_sampling_22() -> bytes:
    data = encode(gradient(2400, 2400, "L"), "JPEG", quality=75)
    _, start, _ = first_segment(data, SOF_MARKERS)
    assert data[start + 11] == 0x11
    return patch(data, start + 11, b"\x22")


@case(INVALID, "DC Huffman table with 200 codes of length 1 (at most 2 fit): over-subscribed")
def _jpeg_dht_oversubscribed() -> bytes:
    bad = bytes([0x00, 200] + [0] * 15) + bytes(range(200))
    return insert_before(encode(gradient(2400, 1800, "L"), "JPEG", quality=75), 0xDA, jpeg_segment(0xC4, bad))


@case(INVALID, "AC Huffman table with 255 codes of length 2 (at most 4 fit)")
def _jpeg_ac_dht_oversubscribed() -> bytes:
    bad = bytes([0x10, 0, 255] + [0] * 14) + bytes(255)
    return insert_before(encode(gradient(800, 600), "JPEG"), 0xDA, jpeg_segment(0xC4, bad))


@case(TOO_LARGE, "~17 kB: SOF0 says 65500x65500; a 4000x3000 frame header hides in a JPG-extension (0xFFC8) segment")
def _jpeg_sof_65500_hidden_frame() -> bytes:
    real = encode(Image.new("L", (4000, 3000), 128), "JPEG", quality=50)
    _, start, end = first_segment(real, SOF_MARKERS)
    hidden = jpeg_segment(0xC8, real[start + 4 : end])
    data = with_sof_size(real, 65500, 65500)
    data = data[:end] + hidden + data[end:]
    sos_end = first_segment(data, [0xDA])[2]
    return data[: sos_end + 16000] + b"\xff\xd9"


@case(TOO_LARGE, "pixel bomb: SOF claims 30000x30000 over a few hundred bytes of data")
def _jpeg_pixel_bomb() -> bytes:
    return with_sof_size(encode(gradient(64, 64), "JPEG"), 30000, 30000)


@case(INVALID, "SOF height 0 (to be given by a DNL marker, which never comes)")
def _jpeg_height_zero() -> bytes:
    return with_sof_size(encode(gradient(64, 64), "JPEG"), 64, 0)


@case(NOT_DECODED, "only the SOI marker (2 bytes: not even a JPEG magic)")
def _jpeg_trunc_soi() -> bytes:
    return base_jpeg()[:2]


@case(INVALID, "SOI and the first byte of a marker")
def _jpeg_trunc_marker() -> bytes:
    return base_jpeg()[:3]


CASES += [
    Case("jpeg_trunc_app0", truncated_at(0xE0, inside=True), INVALID, "cut inside the JFIF APP0 segment"),
    Case("jpeg_trunc_app1", truncated_at(0xE1, inside=True), INVALID, "cut inside the Exif APP1 segment"),
    Case("jpeg_trunc_dqt", truncated_at(0xDB, inside=True), INVALID, "cut inside a quantization table"),
    Case("jpeg_trunc_dht", truncated_at(0xC4, inside=True), INVALID, "cut inside a Huffman table"),
    Case("jpeg_trunc_after_sof", truncated_at(0xC0, inside=False), INVALID, "cut right after the frame header"),
    Case("jpeg_trunc_after_sos", truncated_at(0xDA, inside=False), READ_OR_INVALID, "cut right after the scan header"),
]


@case(READ_OR_INVALID, "cut in the middle of the entropy-coded scan")
def _jpeg_trunc_scan() -> bytes:
    data = base_jpeg()
    sos_end = first_segment(data, [0xDA])[2]
    return data[: (sos_end + len(data)) // 2]


@case(READ_OR_INVALID, "no EOI marker")
def _jpeg_no_eoi() -> bytes:
    return base_jpeg()[:-2]


@case(OK, "APP1 Exif near 64 KB: 5400 IFD entries, orientation 6, Exif/GPS IFD pointers looping to IFD0")
def _jpeg_exif_huge() -> bytes:
    return insert_before(encode(gradient(640, 480), "JPEG"), 0xDB, exif_app1(5400))


@case(READ_OR_INVALID, "3 MB ICC profile in 48 APP2 chunks: a valid-looking header, garbage after it")
def _jpeg_icc_huge() -> bytes:
    rng = random.Random(7)
    size = 48 * 65519
    header = struct.pack(">I", size) + b"lcms" + bytes([4, 0x30, 0, 0]) + b"mntrRGB XYZ " + bytes(12) + b"acsp"
    profile = header + rng.randbytes(size - len(header))
    return insert_before(encode(gradient(640, 480), "JPEG"), 0xDB, icc_app2(profile))


@case(READ_OR_INVALID, "ICC chunks numbered inconsistently (count 200, 3 present, one duplicated)")
def _jpeg_icc_inconsistent() -> bytes:
    profile = bytes(range(256)) * 64
    segs = icc_app2(profile, chunk=4096, count=200)
    return insert_before(encode(gradient(320, 240), "JPEG"), 0xDB, segs[: 3 * 4116] + segs[:4116])


@case(OK, "a real progressive JPEG (libjpeg's default script)")
def _jpeg_progressive() -> bytes:
    return encode(gradient(1600, 1200), "JPEG", progressive=True, quality=85)


def progressive_many_scans(side: int, scans: int) -> bytes:
    """A greyscale progressive JPEG of ``side`` x ``side`` whose DC scan is followed by ``scans`` identical
    AC scans, each a handful of EOB runs (a few tens of bytes) that make the decoder visit every block: the
    decoding time grows as side^2 x scans while the file stays small.  libjpeg has no limit on the scan count
    (djpeg's -maxscans is an application-level progress-monitor check that Pillow does not install)."""
    blocks = ((side + 7) // 8) ** 2
    dqt = jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    sof = jpeg_segment(0xC2, b"\x08" + be16(side) + be16(side) + b"\x01" + b"\x01\x11\x00")
    dc_table = jpeg_segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # one symbol: category 0, code "0"
    ac_symbols = bytes(r << 4 for r in range(15))  # EOBr: r extra bits, runs of 2^r .. 2^(r+1)-1 blocks
    ac_table = jpeg_segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + ac_symbols)  # 4-bit codes, code r
    dc_scan = jpeg_segment(0xDA, b"\x01\x01\x00\x00\x00\x00")
    bits = BitWriter()
    for _ in range(blocks):
        bits.put(0, 1)
    dc_data = bits.flush()
    ac_scan = jpeg_segment(0xDA, b"\x01\x01\x00\x01\x3f\x00")
    bits = BitWriter()
    left = blocks
    while left:
        run = min(left, 32767)
        r = run.bit_length() - 1
        bits.put(r, 4)
        bits.put(run - (1 << r), r)
        left -= run
    ac_data = bits.flush()
    return b"\xff\xd8" + dqt + sof + dc_table + ac_table + dc_scan + dc_data + (ac_scan + ac_data) * scans + b"\xff\xd9"


@case(
    ANY_CLEAN,
    "progressive 7000x7000 greyscale, 3000 scans of EOB runs (~0.3 MB): CPU time ~ pixels x scans",
    heavy=True,
)
def _jpeg_progressive_many_scans() -> bytes:
    return progressive_many_scans(7000, 3000)


@case(OK, "CMYK JPEG (Adobe APP14)")
def _jpeg_cmyk() -> bytes:
    return encode(gradient(2000, 1500, "CMYK"), "JPEG", quality=80)


@case(READ_OR_INVALID, "restart markers every block, then renumbered and interleaved with garbage")
def _jpeg_restart_garbage() -> bytes:
    data = bytearray(encode(gradient(800, 600), "JPEG", restart_marker_blocks=1))
    sos_end = first_segment(bytes(data), [0xDA])[2]
    rng = random.Random(3)
    i = sos_end
    while i < len(data) - 3:
        if data[i] == 0xFF and 0xD0 <= data[i + 1] <= 0xD7:
            data[i + 1] = 0xD0 + rng.randrange(8)
            if rng.random() < 0.2:
                data[i + 2 : i + 2] = rng.randbytes(3).replace(b"\xff", b"\x00")
        i += 1
    return bytes(data)


@case(READ_OR_INVALID, "restart interval declared (DRI) but no restart markers in the scan")
def _jpeg_dri_without_rst() -> bytes:
    return insert_before(encode(gradient(800, 600), "JPEG"), 0xDA, jpeg_segment(0xDD, be16(1)))


@case(ANY_CLEAN, "Huffman scan under an arithmetic-coding frame header (SOF9)")
def _jpeg_sof9_arithmetic() -> bytes:
    data = encode(gradient(640, 480), "JPEG")
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(data, start + 1, b"\xc9")


@case(ANY_CLEAN, "frame header claiming 12-bit precision over an 8-bit scan")
def _jpeg_12bit() -> bytes:
    data = encode(gradient(640, 480), "JPEG")
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(patch(data, start + 1, b"\xc1"), start + 4, b"\x0c")


@case(ANY_CLEAN, "lossless frame header (SOF3) over a DCT scan")
def _jpeg_sof3_lossless() -> bytes:
    data = encode(gradient(640, 480), "JPEG")
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(data, start + 1, b"\xc3")


@case(INVALID, "sampling factors 5x5 (libjpeg allows 1-4)")
def _jpeg_sampling_55() -> bytes:
    data = encode(gradient(640, 480), "JPEG")
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(data, start + 11, b"\x55")


@case(ANY_CLEAN, "three components with 4x4, 1x4 and 4x1 sampling")
def _jpeg_sampling_odd() -> bytes:
    data = encode(gradient(640, 480), "JPEG", subsampling=0)
    _, start, _ = first_segment(data, SOF_MARKERS)
    return patch(patch(patch(data, start + 11, b"\x44"), start + 14, b"\x14"), start + 17, b"\x41")


@case(OK, "20,000 COM segments before the frame (the marker parser's loop)")
def _jpeg_many_com() -> bytes:
    return insert_before(encode(gradient(320, 240), "JPEG"), 0xDB, jpeg_segment(0xFE, b"x") * 20000)


@case(OK, "Exif orientation 6 on a 2400x1800 colour JPEG (the box math and transposes)")
def _jpeg_orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(gradient(2400, 1800), "JPEG", exif=exif.tobytes())


@case(OK, "Exif orientation 0x7fff (no such orientation)")
def _jpeg_orientation_bogus() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 0x7FFF
    return encode(gradient(320, 240), "JPEG", exif=exif.tobytes())


@case(OK, "MPO: two JPEG frames and an MP index (Pillow upgrades the JPEG to MPO)")
def _jpeg_mpo() -> bytes:
    return encode(gradient(320, 240), "MPO", save_all=True, append_images=[gradient(320, 240, "RGB").rotate(90)])


@case(READ_OR_INVALID, "MP index claiming 1000 images with offsets beyond the file")
def _jpeg_mpo_bogus_index() -> bytes:
    entries = b"".join(struct.pack(">IIIHH", 0x00030000, 0x7FFFFFFF, 0x7FFFFFF0, 0, 0) for _ in range(1000))
    tags = [(0xB000, 7, 4, int.from_bytes(b"0100", "big")), (0xB001, 4, 1, 1000), (0xB002, 7, len(entries), 50)]
    ifd = be16(len(tags)) + b"".join(struct.pack(">HHII", *t) for t in tags) + struct.pack(">I", 0)
    mpf = b"MPF\x00MM\x00*" + struct.pack(">I", 8) + ifd + entries
    return insert_before(encode(gradient(320, 240), "JPEG"), 0xDB, jpeg_segment(0xE2, mpf))


# ------------------------------------------------------------------------------------------------- PNG


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png(
    width: int,
    height: int,
    idat: bytes,
    *,
    depth: int = 8,
    color: int = 0,
    interlace: int = 0,
    before: Sequence[bytes] = (),
    after: Sequence[bytes] = (),
) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace))
    return PNG_MAGIC + ihdr + b"".join(before) + png_chunk(b"IDAT", idat) + b"".join(after) + png_chunk(b"IEND", b"")


def constant_rows(row_bytes: int, rows: int, first_pixel: bytes) -> bytes:
    """Deflated scanlines of a constant image: row 0 filtered Sub (its first pixel, then zero deltas), the
    others Up with zero deltas - nearly all zeros, so ~1000:1."""
    c = zlib.compressobj(9)
    parts = [c.compress(b"\x01" + first_pixel + bytes(row_bytes - len(first_pixel)))]
    batch = (b"\x02" + bytes(row_bytes)) * 64
    for _ in range((rows - 1) // 64):
        parts.append(c.compress(batch))
    parts.append(c.compress((b"\x02" + bytes(row_bytes)) * ((rows - 1) % 64)))
    parts.append(c.flush())
    return b"".join(parts)


def adam7_bytes(width: int, height: int, bits_per_pixel: int) -> int:
    """Length of the filtered, interlaced (Adam7) scanlines of an image."""
    total = 0
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        pw, ph = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if pw and ph:
            total += ph * (1 + (pw * bits_per_pixel + 7) // 8)
    return total


@case(
    READ_OR_TOO_LARGE,
    "0.1 MB 16-bit greyscale PNG, 7071x7071 (100 MB as I;16: no float64 copy may be made)",
    heavy=True,
)
def _png_grey16_7071() -> bytes:
    return png(SIDE, SIDE, constant_rows(2 * SIDE, SIDE, be16(40000)), depth=16, color=0)


@case(
    READ_OR_TOO_LARGE, "RGBA PNG 7071x7071, half-transparent (200 MB decoded; compositing must not copy it)", heavy=True
)
def _png_rgba_7071() -> bytes:
    return png(SIDE, SIDE, constant_rows(4 * SIDE, SIDE, bytes([200, 30, 30, 128])), depth=8, color=6)


@case(READ_OR_TOO_LARGE, "palette PNG 7071x7071 with a transparent entry (palette -> RGBA -> RGB)", heavy=True)
def _png_palette_trns_7071() -> bytes:
    plte = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255]))
    trns = png_chunk(b"tRNS", b"\x00\xff")
    return png(SIDE, SIDE, deflate_zeros((SIDE + 1) * SIDE), depth=8, color=3, before=[plte, trns])


@case(READ_OR_TOO_LARGE, "1-bit greyscale PNG 7071x7071 (6 MB of bits, 50 MB as mode 1)", heavy=True)
def _png_1bit_7071() -> bytes:
    return png(SIDE, SIDE, constant_rows((SIDE + 7) // 8, SIDE, b"\xaa"), depth=1, color=0)


@case(READ_OR_TOO_LARGE, "Adam7-interlaced 8-bit greyscale PNG 7071x7071", heavy=True)
def _png_interlaced_7071() -> bytes:
    return png(SIDE, SIDE, deflate_zeros(adam7_bytes(SIDE, SIDE, 8)), depth=8, color=0, interlace=1)


@case(READ_OR_TOO_LARGE, "16-bit RGB PNG 5000x5000 (150 MB of samples)", heavy=True)
def _png_rgb16_5000() -> bytes:
    return png(5000, 5000, constant_rows(6 * 5000, 5000, bytes([0x80, 0, 0x40, 0, 0x20, 0])), depth=16, color=2)


@case(OK, "16-bit greyscale + alpha PNG 3000x3000 with an eXIf orientation 6 chunk after the pixels")
def _png_la16_exif_after_idat() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif_chunk = png_chunk(b"eXIf", exif.tobytes())
    return png(
        3000, 3000, constant_rows(4 * 3000, 3000, bytes([0x90, 0, 0x80, 0])), depth=16, color=4, after=[exif_chunk]
    )


@case(OK, "16-bit greyscale PNG with a tRNS colour key")
def _png_grey16_trns() -> bytes:
    return png(
        1200, 900, constant_rows(2400, 900, be16(40000)), depth=16, color=0, before=[png_chunk(b"tRNS", be16(40000))]
    )


@case(TOO_LARGE, "IHDR claims 100000x100000 (10 Gpx) over a tiny IDAT")
def _png_ihdr_100000() -> bytes:
    return png(100000, 100000, deflate_zeros(100001 * 64), depth=8, color=0)


@case(TOO_LARGE, "IHDR claims 2^31-1 x 1 (a row longer than any buffer)")
def _png_ihdr_wide() -> bytes:
    return png(0x7FFFFFFF, 1, deflate_zeros(1 << 16), depth=8, color=0)


@case(INVALID, "IHDR width 0")
def _png_width_zero() -> bytes:
    return png(0, 10, deflate_zeros(10), depth=8, color=0)


@case(INVALID, "IHDR with bit depth 7 (no such depth)")
def _png_bad_depth() -> bytes:
    return png(10, 10, deflate_zeros(110), depth=7, color=0)


def small_png_idat(w: int = 64, h: int = 64) -> bytes:
    return deflate_zeros((w + 1) * h)


@case(READ_OR_INVALID, "zTXt chunk inflating to 100 MB (a decompression bomb in metadata), before IDAT")
def _png_ztxt_bomb() -> bytes:
    return png(64, 64, small_png_idat(), before=[png_chunk(b"zTXt", b"Comment\x00\x00" + deflate_zeros(100 << 20))])


@case(READ_OR_INVALID, "compressed iTXt chunks inflating to 100 MB, one before and one after IDAT")
def _png_itxt_bomb() -> bytes:
    itxt = png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + deflate_zeros(100 << 20))
    return png(64, 64, small_png_idat(), before=[itxt], after=[itxt])


@case(READ_OR_INVALID, "iCCP profile inflating to 100 MB")
def _png_iccp_bomb() -> bytes:
    return png(64, 64, small_png_idat(), before=[png_chunk(b"iCCP", b"icc\x00\x00" + deflate_zeros(100 << 20))])


@case(READ_OR_INVALID, "iCCP profile that inflates to garbage (not an ICC profile)")
def _png_iccp_garbage() -> bytes:
    return png(
        64, 64, small_png_idat(), before=[png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(range(256)) * 40))]
    )


@case(OK, "100,000 small ancillary chunks (tEXt and unknown) before IDAT")
def _png_many_chunks() -> bytes:
    chunks = [png_chunk(b"tEXt", b"k\x00v"), png_chunk(b"prVt", b"\x00" * 4)] * 50000
    return png(64, 64, small_png_idat(), before=chunks)


@case(OK, "pixels split over 200,000 one-byte IDAT chunks (a stored deflate stream)")
def _png_many_idat() -> bytes:
    stream = zlib.compress(bytes(448 * 447), 0)
    head = PNG_MAGIC + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 447, 447, 8, 0, 0, 0, 0))
    return head + b"".join(png_chunk(b"IDAT", stream[i : i + 1]) for i in range(len(stream))) + png_chunk(b"IEND", b"")


@case(INVALID, "IDAT cut in half (no IEND)")
def _png_trunc_idat() -> bytes:
    data = encode(gradient(300, 200), "PNG")
    return data[: len(data) // 2]


@case(INVALID, "cut inside IHDR")
def _png_trunc_ihdr() -> bytes:
    return encode(gradient(30, 20), "PNG")[:20]


@case(READ_OR_INVALID, "no IEND chunk")
def _png_no_iend() -> bytes:
    return encode(gradient(300, 200), "PNG")[:-12]


@case(INVALID, "bad CRC on IHDR")
def _png_bad_crc() -> bytes:
    data = encode(gradient(30, 20), "PNG")
    return patch(data, 29, b"\x00\x00\x00\x00")


@case(READ_OR_INVALID, "1x1 image whose IDAT inflates to 100 MB")
def _png_idat_bomb() -> bytes:
    return png(1, 1, deflate_zeros(100 << 20), depth=8, color=0)


def apng(
    frames: int,
    width: int = 16,
    height: int = 16,
    num_frames: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> bytes:
    """An APNG: ``frames`` frames (the first is the IDAT image), acTL claiming ``num_frames``."""
    fw, fh = frame_size or (width, height)
    actl = png_chunk(b"acTL", struct.pack(">II", num_frames if num_frames is not None else frames, 0))
    idat = zlib.compress(bytes((width + 1) * height))
    fdat = zlib.compress(bytes((fw + 1) * fh))
    seq = 0
    out = [PNG_MAGIC + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)), actl]
    for k in range(frames):
        out.append(
            png_chunk(
                b"fcTL", struct.pack(">IIIIIHHBB", seq, fw if k else width, fh if k else height, 0, 0, 1, 100, 0, 0)
            )
        )
        seq += 1
        if k == 0:
            out.append(png_chunk(b"IDAT", idat))
        else:
            out.append(png_chunk(b"fdAT", struct.pack(">I", seq) + fdat))
            seq += 1
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


@case(OK, "APNG with 20,000 frames")
def _apng_many_frames() -> bytes:
    return apng(20000)


@case(READ_OR_INVALID, "APNG whose acTL claims 2^31-1 frames, with a second frame far larger than the canvas")
def _apng_bogus() -> bytes:
    return apng(2, num_frames=0x7FFFFFFF, frame_size=(5000, 5000))


# ------------------------------------------------------------------------------------------------ TIFF

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 1, 2, 3, 4, 5, 7
_TIFF_FMT = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", RATIONAL: "I", UNDEFINED: "B"}
Tag = tuple[int, int, Sequence[int]]


def tiff(tags: Sequence[Tag], payload: bytes = b"", *, loop: bool = False, magic: bytes = b"II*\x00") -> bytes:
    """A little-endian, one-IFD TIFF: header, ``payload`` at offset 8 (strip offsets point into it: 8 + ...),
    then the IFD and its out-of-line values.  ``loop``: the IFD's next-IFD offset points at itself."""
    ifd_at = 8 + len(payload) + (len(payload) & 1)
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, typ, values in sorted(tags, key=lambda t: t[0]):
        raw = struct.pack(f"<{len(values)}{_TIFF_FMT[typ]}", *values)
        count = len(values) // 2 if typ == RATIONAL else len(values)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = le32(extra_at + len(extra))
            extra += raw + b"\x00" * (len(raw) & 1)
        entries += struct.pack("<HHI", tag, typ, count) + field
    pad = b"\x00" * (len(payload) & 1)
    return magic + le32(ifd_at) + payload + pad + le16(len(tags)) + entries + le32(ifd_at if loop else 0) + extra


def strip_tags(
    width: int,
    height: int,
    offsets: Sequence[int],
    counts: Sequence[int],
    *,
    bps: Sequence[int] = (8,),
    photometric: int = 1,
    compression: int = 1,
    rows_per_strip: int | None = None,
    sample_format: int | None = None,
) -> list[Tag]:
    tags: list[Tag] = [
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, list(bps)),
        (259, SHORT, [compression]),
        (262, SHORT, [photometric]),
        (273, LONG, list(offsets)),
        (277, SHORT, [len(bps)]),
        (278, LONG, [rows_per_strip or height]),
        (279, LONG, list(counts)),
    ]
    if sample_format is not None:
        tags.append((339, SHORT, [sample_format] * len(bps)))
    return tags


def shared_strip_tiff(
    width: int, height: int, bps: Sequence[int], rows: int, *, photometric: int = 1, sample_format: int | None = None
) -> bytes:
    """A deflate-compressed TIFF whose every strip of ``rows`` rows points at the same compressed block of
    zeros: a few kilobytes for any size."""
    block = zlib.compress(bytes(width * sum(bps) // 8 * rows), 9)
    n = (height + rows - 1) // rows
    tags = strip_tags(
        width,
        height,
        [8] * n,
        [len(block)] * n,
        bps=bps,
        photometric=photometric,
        compression=8,
        rows_per_strip=rows,
        sample_format=sample_format,
    )
    return tiff(tags, block)


@case(OK, "40,000 one-pixel pages (~4 MB): walking every IFD (n_frames) took 13-15 s")
def _tiff_40000_pages() -> bytes:
    pages = 40000
    size = 104  # IFD: 2 + 8 entries x 12 + 4 = 102, pixel byte, pad
    out = bytearray(b"II*\x00" + le32(8))
    for k in range(pages):
        at = 8 + k * size
        nxt = at + size if k + 1 < pages else 0
        entries = [
            (256, 4, 1, 1),
            (257, 4, 1, 1),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, at + 102),
            (278, 4, 1, 1),
            (279, 4, 1, 1),
        ]
        out += le16(8) + b"".join(struct.pack("<HHII", *e) for e in entries) + le32(nxt) + bytes([k & 0xFF, 0])
    return bytes(out)


@case(READ_OR_INVALID, "one uncompressed strip whose byte count claims 4 GB")
def _tiff_huge_strip_claim() -> bytes:
    return tiff(strip_tags(1000, 1000, [8], [0xFFFFFFF0]), bytes(4096))


@case(READ_OR_INVALID, "one deflate strip whose byte count claims 4 GB")
def _tiff_huge_strip_claim_deflate() -> bytes:
    block = zlib.compress(bytes(1000 * 1000))
    return tiff(strip_tags(1000, 1000, [8], [0xFFFFFFF0], compression=8), block)


@case(READ_OR_TOO_LARGE, "bilevel CCITT G4 fax TIFF 7000x7000 (a few kB; 49 MB as mode 1)", heavy=True)
def _tiff_g4_7000() -> bytes:
    im = Image.new("1", (7000, 7000), 1)
    im.paste(0, (1000, 1000, 2000, 6000))
    return encode(im, "TIFF", compression="group4")


@case(READ_OR_TOO_LARGE, "16-bit greyscale TIFF 7071x7071, deflate strips (100 MB as I;16)", heavy=True)
def _tiff_i16_7071() -> bytes:
    return shared_strip_tiff(SIDE, SIDE, (16,), 256)


@case(READ_OR_TOO_LARGE, "32-bit float TIFF 5000x5000, deflate strips (100 MB as F)", heavy=True)
def _tiff_float32_5000() -> bytes:
    return shared_strip_tiff(5000, 5000, (32,), 256, sample_format=3)


@case(OK, "16-bit RGB TIFF (small)")
def _tiff_rgb16() -> bytes:
    return shared_strip_tiff(600, 400, (16, 16, 16), 64, photometric=2)


@case(ANY_CLEAN, "16-bit CMYK TIFF (photometric 5)")
def _tiff_cmyk16() -> bytes:
    return shared_strip_tiff(600, 400, (16, 16, 16, 16), 64, photometric=5)


@case(ANY_CLEAN, "64-bit samples (float64)")
def _tiff_float64() -> bytes:
    return shared_strip_tiff(100, 100, (64,), 100, sample_format=3)


@case(ANY_CLEAN, "200 samples per pixel")
def _tiff_200_samples() -> bytes:
    return tiff(strip_tags(10, 10, [8], [20000], bps=[8] * 200, photometric=2), bytes(20000))


@case(TOO_LARGE, "claims 100000x100000 pixels")
def _tiff_huge_dims() -> bytes:
    return tiff(strip_tags(100000, 100000, [8], [1000], compression=8), deflate_zeros(100000))


@case(ANY_CLEAN, "64x64 image stored in one 65536x65536 tile (a tile buffer of 4 GB)")
def _tiff_huge_tile() -> bytes:
    block = zlib.compress(bytes(1 << 16))
    tags: list[Tag] = [
        (256, LONG, [64]),
        (257, LONG, [64]),
        (258, SHORT, [8]),
        (259, SHORT, [8]),
        (262, SHORT, [1]),
        (277, SHORT, [1]),
        (322, LONG, [65536]),
        (323, LONG, [65536]),
        (324, LONG, [8]),
        (325, LONG, [len(block)]),
    ]
    return tiff(tags, block)


@case(OK, "one valid page whose next-IFD offset points back at itself")
def _tiff_ifd_loop() -> bytes:
    return tiff(strip_tags(64, 64, [8], [4096]), bytes(range(256)) * 16, loop=True)


@case(OK, "two pages whose IFDs point at each other")
def _tiff_ifd_loop_two() -> bytes:
    one = tiff(strip_tags(64, 64, [8], [4096]), bytes(4096))
    ifd_at = int.from_bytes(one[4:8], "little")
    n = int.from_bytes(one[ifd_at : ifd_at + 2], "little")
    second_at = len(one) + (len(one) & 1)
    first = patch(one, ifd_at + 2 + 12 * n, le32(second_at))
    second_ifd = first[ifd_at : ifd_at + 2 + 12 * n] + le32(ifd_at)
    return first + b"\x00" * (len(one) & 1) + second_ifd


@case(READ_OR_INVALID, "two pages, cut inside the second IFD")
def _tiff_trunc_second_ifd() -> bytes:
    one = tiff(strip_tags(64, 64, [8], [4096]), bytes(4096))
    ifd_at = int.from_bytes(one[4:8], "little")
    n = int.from_bytes(one[ifd_at : ifd_at + 2], "little")
    second_at = len(one)
    first = patch(one, ifd_at + 2 + 12 * n, le32(second_at))
    return first + one[ifd_at : ifd_at + 2 + 12 * 3]


@case(READ_OR_INVALID, "APNG cut inside the second frame's fcTL")
def _apng_trunc_second_frame() -> bytes:
    data = apng(3)
    second = data.index(b"fcTL", data.index(b"IDAT"))
    return data[: second + 10]


@case(READ_OR_INVALID, "planar-separate RGB (PlanarConfiguration 2)")
def _tiff_planar() -> bytes:
    w, h = 64, 48
    plane = bytes(range(256)) * (w * h // 256)
    tags = strip_tags(w, h, [8, 8 + w * h, 8 + 2 * w * h], [w * h] * 3, bps=(8, 8, 8), photometric=2)
    return tiff([*tags, (284, SHORT, [2])], plane * 3)


@case(READ_OR_INVALID, "palette TIFF (photometric 3) without a ColorMap")
def _tiff_palette_no_colormap() -> bytes:
    return tiff(strip_tags(64, 64, [8], [4096], photometric=3), bytes(4096))


@case(ANY_CLEAN, "YCbCr 4:4 subsampling on an odd size, uncompressed")
def _tiff_ycbcr_odd() -> bytes:
    tags = strip_tags(33, 17, [8], [5000], bps=(8, 8, 8), photometric=6)
    return tiff([*tags, (530, SHORT, [4, 4])], bytes(5000))


@case(ANY_CLEAN, "old-style JPEG compression (6) over a JPEG strip of another size")
def _tiff_ojpeg() -> bytes:
    strip = encode(gradient(320, 240, "L"), "JPEG")
    tags = strip_tags(640, 480, [8], [len(strip)], compression=6)
    return tiff([*tags, (513, LONG, [8]), (514, LONG, [len(strip)])], strip)


@case(READ_OR_INVALID, "JPEG compression (7) over a JPEG strip of another size")
def _tiff_jpeg_mismatch() -> bytes:
    strip = encode(gradient(320, 240, "L"), "JPEG")
    return tiff(strip_tags(2000, 1500, [8], [len(strip)], compression=7), strip)


@case(READ_OR_INVALID, "LZW strip (compression 5) of garbage codes")
def _tiff_lzw_garbage() -> bytes:
    return tiff(strip_tags(500, 500, [8], [3000], compression=5), random.Random(5).randbytes(3000))


@case(
    NOT_DECODED, "a PhotoCD image behind a TIFF magic (Pillow's PCD plugin would take it): never decode another format"
)
def _tiff_magic_photocd() -> bytes:
    head = b"II*\x00" + le32(0xFFFFFFF0)
    return head + bytes(2048 - len(head)) + b"PCD_" + bytes(96 * 2048 + 768 * 512 * 3 // 2 - 2052)


@case(NOT_DECODED, "TIFF magic, then a JPEG")
def _tiff_magic_jpeg_body() -> bytes:
    return b"II*\x00" + encode(gradient(64, 64), "JPEG")


@case(UNSUPPORTED, "BigTIFF (II+): not one of the sniffed formats")
def _bigtiff() -> bytes:
    return b"II+\x00\x08\x00\x00\x00" + bytes(64)


@case(INVALID, "TIFF magic and an IFD offset beyond the file")
def _tiff_bad_ifd_offset() -> bytes:
    return b"MM\x00*" + struct.pack(">I", 0x7FFFFFF0) + bytes(64)


@case(READ_OR_INVALID, "IFD claiming 65535 entries in a 1 kB file")
def _tiff_ifd_count_lie() -> bytes:
    return b"II*\x00" + le32(8) + le16(0xFFFF) + random.Random(9).randbytes(1000)


# ------------------------------------------------------------------------------------------------- GIF


def gif(width: int, height: int, body: bytes, colors_log2: int = 1) -> bytes:
    """GIF89a with a global colour table of 2**colors_log2 entries and ``body`` (frames), then the trailer."""
    table = bytes([0, 0, 0, 255, 255, 255]) + bytes(3 * ((1 << colors_log2) - 2))
    return b"GIF89a" + le16(width) + le16(height) + bytes([0x80 | (colors_log2 - 1), 0, 0]) + table + body + b";"


def gif_frame(w: int, h: int, lzw_min: int, data: bytes, x: int = 0, y: int = 0) -> bytes:
    gce = b"\x21\xf9\x04\x04\x01\x00\x00\x00"  # dispose: do not dispose; delay 1
    blocks = b"".join(bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255))
    return gce + b"\x2c" + le16(x) + le16(y) + le16(w) + le16(h) + b"\x00" + bytes([lzw_min]) + blocks + b"\x00"


ONE_PIXEL_LZW = b"\x44\x01"  # min code size 2: clear (4), index 0, end (5) in 3-bit codes


def gif_lzw_constant(pixels: int, min_code: int = 2) -> bytes:
    """GIF LZW of ``pixels`` copies of index 0: codes for runs of length 1, 2, 3, ... until the code table is
    full (4096), then the longest run again and again (no clear code): ~2700:1."""
    clear = 1 << min_code
    first = clear + 2
    acc = nbits = 0
    out = bytearray()

    def put(code: int, index: int) -> None:  # ``index``: how many data codes came before (the decoder's table size)
        nonlocal acc, nbits
        width = min(12, max(min_code + 1, (first + max(0, index - 1)).bit_length()))
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    put(clear, 0)
    longest = 4095 - first + 2
    index, left, length = 0, pixels, 1
    while left:
        run = min(length, left)
        put(0 if run == 1 else first + run - 2, index)
        index += 1
        left -= run
        length = min(length + 1, longest)
    put(clear + 1, index)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


@case(OK, "20,000 one-pixel frames (walking every frame for n_frames parses them all)")
def _gif_many_frames() -> bytes:
    return gif(16, 16, gif_frame(1, 1, 2, ONE_PIXEL_LZW) * 20000)


@case(TOO_LARGE, "logical screen 65535x65535 over a 1-pixel frame")
def _gif_screen_huge() -> bytes:
    return gif(65535, 65535, gif_frame(1, 1, 2, ONE_PIXEL_LZW))


@case(frozenset({413, 422}), "1x1 screen, first frame descriptor 65535x65535 (the canvas grows to the frame)")
def _gif_frame_beyond_screen() -> bytes:
    return gif(1, 1, gif_frame(65535, 65535, 2, ONE_PIXEL_LZW))


@case(READ_OR_TOO_LARGE, "7000x7000 frame in ~20 kB of LZW codes (runs of up to 4091 pixels)", heavy=True)
def _gif_lzw_bomb() -> bytes:
    return gif(7000, 7000, gif_frame(7000, 7000, 2, gif_lzw_constant(7000 * 7000)), colors_log2=2)


@case(READ_OR_INVALID, "LZW codes beyond the table (code 4095 first)")
def _gif_bad_lzw() -> bytes:
    return gif(64, 64, gif_frame(64, 64, 2, b"\x04\xff\xff\xff\xff\xff"))


@case(INVALID, "screen descriptor and trailer, no frame")
def _gif_no_frames() -> bytes:
    return gif(10, 10, b"")


@case(INVALID, "cut inside the screen descriptor")
def _gif_trunc_header() -> bytes:
    return b"GIF89a\x10\x00"


@case(READ_OR_INVALID, "cut inside the first frame's image data")
def _gif_trunc_data() -> bytes:
    data = encode(noise(200, 200, "P"), "GIF")
    return data[: len(data) // 2]


def two_frame_gif_cut(into_second: int) -> bytes:
    frame = gif_frame(1, 1, 2, ONE_PIXEL_LZW)
    full = gif(16, 16, frame * 2)
    return full[: len(full) - 1 - len(frame) + into_second]


@case(
    READ_OR_INVALID, "two-frame GIF cut inside the second frame's image descriptor (checking for more frames reads it)"
)
def _gif_trunc_second_frame() -> bytes:
    return two_frame_gif_cut(12)


@case(READ_OR_INVALID, "two-frame GIF cut right after the second frame's image descriptor")
def _gif_trunc_second_descriptor() -> bytes:
    return two_frame_gif_cut(17)


@case(READ_OR_INVALID, "two-frame GIF cut inside the second frame's graphic control extension")
def _gif_trunc_second_gce() -> bytes:
    return two_frame_gif_cut(4)


@case(OK, "100,000 comment extensions before the frame")
def _gif_many_extensions() -> bytes:
    return gif(16, 16, b"\x21\xfe\x01x\x00" * 100000 + gif_frame(1, 1, 2, ONE_PIXEL_LZW))


# ------------------------------------------------------------------------------------------------ WebP


def riff(chunks: bytes, size: int | None = None) -> bytes:
    return b"RIFF" + le32(size if size is not None else 4 + len(chunks)) + b"WEBP" + chunks


def webp_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + le32(len(data)) + data + b"\x00" * (len(data) & 1)


@functools.cache
def tiny_vp8l() -> bytes:
    """The VP8L chunk (header and data) of a lossless 16x16 WebP."""
    data = encode(gradient(16, 16), "WEBP", lossless=True)
    assert data[12:16] == b"VP8L"
    return data[12 : 20 + int.from_bytes(data[16:20], "little") + (data[16] & 1)]


def animated_webp(frames: int, canvas: tuple[int, int] = (16, 16)) -> bytes:
    vp8x = webp_chunk(b"VP8X", bytes([0x02, 0, 0, 0]) + le24(canvas[0] - 1) + le24(canvas[1] - 1))
    anim = webp_chunk(b"ANIM", bytes(4) + le16(0))
    anmf = webp_chunk(b"ANMF", le24(0) + le24(0) + le24(15) + le24(15) + le24(100) + b"\x00" + tiny_vp8l())
    return riff(vp8x + anim + anmf * frames)


@case(OK, "animated WebP with 5000 frames")
def _webp_many_frames() -> bytes:
    return animated_webp(5000)


@case(TOO_LARGE, "animated WebP whose canvas is 16383x16383 (libwebp's animation decoder allocates canvases)")
def _webp_canvas_huge() -> bytes:
    return animated_webp(1, canvas=(16383, 16383))


@case(frozenset({413, 422}), "still WebP: VP8X canvas 16383x16383 over a 16x16 bitstream")
def _webp_vp8x_canvas_mismatch() -> bytes:
    return riff(webp_chunk(b"VP8X", bytes(4) + le24(16382) + le24(16382)) + tiny_vp8l())


@case(TOO_LARGE, "VP8L header claims 16384x16384 over a few bytes")
def _webp_vp8l_huge() -> bytes:
    bits = (16383) | (16383 << 14)  # 14-bit width-1, height-1, no alpha, version 0
    return riff(webp_chunk(b"VP8L", b"\x2f" + struct.pack("<I", bits) + bytes(20)))


@case(INVALID, "cut in half")
def _webp_trunc() -> bytes:
    data = encode(gradient(200, 200), "WEBP")
    return data[: len(data) // 2]


@case(READ_OR_INVALID, "RIFF size field says 4 GB")
def _webp_riff_size_lie() -> bytes:
    data = encode(gradient(64, 64), "WEBP")
    return patch(data, 4, le32(0xFFFFFFF0))


@case(READ_OR_INVALID, "animation frame placed outside the canvas")
def _webp_frame_outside() -> bytes:
    vp8x = webp_chunk(b"VP8X", bytes([0x02, 0, 0, 0]) + le24(15) + le24(15))
    anmf = webp_chunk(b"ANMF", le24(4000) + le24(4000) + le24(15) + le24(15) + le24(100) + b"\x00" + tiny_vp8l())
    return riff(vp8x + webp_chunk(b"ANIM", bytes(6)) + anmf)


# ------------------------------------------------------------------------------------------------- BMP


def bmp(
    width: int,
    height: int,
    bpp: int,
    pixels: bytes,
    *,
    compression: int = 0,
    colors: int = 0,
    palette: bytes | None = None,
    offset: int | None = None,
) -> bytes:
    pal = (
        palette
        if palette is not None
        else (b"".join(bytes([i, i, i, 0]) for i in range(1 << bpp)) if bpp <= 8 else b"")
    )
    at = offset if offset is not None else 14 + 40 + len(pal)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, len(pixels), 2835, 2835, colors, 0)
    return b"BM" + le32(14 + 40 + len(pal) + len(pixels)) + bytes(4) + le32(at) + info + pal + pixels


@case(TOO_LARGE, "header claims 100000x100000 at 24 bits")
def _bmp_huge() -> bytes:
    return bmp(100000, 100000, 24, bytes(1024))


@case(frozenset({200, 413, 422}), "RLE8 7000x7000 with nothing but end-of-bitmap", heavy=True)
def _bmp_rle8_empty() -> bytes:
    return bmp(7000, 7000, 8, b"\x00\x01", compression=1)


@case(
    ANY_CLEAN,
    "RLE8 7000x7000 of one pixel then end-of-line per row (28 kB): the line padding loops per pixel",
    heavy=True,
)
def _bmp_rle8_eol() -> bytes:
    return bmp(7000, 7000, 8, b"\x01\x07\x00\x00" * 7000 + b"\x00\x01", compression=1)


@case(ANY_CLEAN, "RLE4 4000x4000 of 255-pixel runs (one decoder step per pixel)", heavy=True)
def _bmp_rle4_runs() -> bytes:
    row = b"\xff\x12" * (4000 // 255) + bytes([4000 % 255, 0x34]) + b"\x00\x00"
    return bmp(4000, 4000, 4, row * 4000 + b"\x00\x01", compression=2)


@case(OK, "top-down (negative height) 24-bit")
def _bmp_top_down() -> bytes:
    return bmp(64, -48, 24, bytes(64 * 3 * 48))


@case(frozenset({413, 422}), "height -2^31 (its absolute value overflows int32)")
def _bmp_height_int_min() -> bytes:
    return bmp(1, -(1 << 31), 24, bytes(64))


@case(INVALID, "pixel data cut short")
def _bmp_trunc() -> bytes:
    data = encode(gradient(200, 100), "BMP")
    return data[: len(data) // 2]


@case(INVALID, "bit count 0")
def _bmp_bpp0() -> bytes:
    return bmp(10, 10, 0, bytes(400), palette=b"")


@case(ANY_CLEAN, "colours used = 2^32-1 (the palette read)")
def _bmp_palette_huge() -> bytes:
    return bmp(10, 10, 8, bytes(100), colors=0xFFFFFFFF)


@case(READ_OR_INVALID, "pixel offset beyond the end of the file")
def _bmp_offset_beyond() -> bytes:
    return bmp(10, 10, 24, bytes(320), offset=0x7FFFFFF0)


@case(READ_OR_INVALID, "32-bit BI_BITFIELDS with overlapping, zero and full masks")
def _bmp_bitfields_odd() -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, 16, 16, 1, 32, 3, 1024, 0, 0, 0, 0)
    masks = struct.pack("<III", 0xFFFFFFFF, 0, 0x00FF00FF)
    return b"BM" + le32(14 + 40 + 12 + 1024) + bytes(4) + le32(14 + 40 + 12) + info + masks + bytes(1024)


# ----------------------------------------------------------------------------------------------- other


@case(INVALID, "0 bytes")
def _empty() -> bytes:
    return b""


@case(UNSUPPORTED, "1 byte")
def _one_byte() -> bytes:
    return b"\xff"


@case(UNSUPPORTED, "4 kB of random bytes")
def _random_bytes() -> bytes:
    return b"\x00" + random.Random(1).randbytes(4095)


@case(NOT_DECODED, "text that starts with BM (the BMP magic is only 2 bytes)")
def _text_bm() -> bytes:
    return b"BMW and Mercedes are car makers, not image formats.\n" * 20


@case(INVALID, "PNG magic, then a JPEG")
def _png_magic_jpeg_body() -> bytes:
    return PNG_MAGIC + encode(gradient(64, 64), "JPEG")


@case(INVALID, "JPEG magic, then a PNG")
def _jpeg_magic_png_body() -> bytes:
    return b"\xff\xd8\xff" + encode(gradient(64, 64), "PNG")


@case(frozenset({413, 422}), "GIF magic, then a PNG (whose bytes read as a huge logical screen)")
def _gif_magic_png_body() -> bytes:
    return b"GIF89a" + encode(gradient(64, 64), "PNG")


@case(INVALID, "RIFF/WEBP header, then a JPEG")
def _webp_magic_jpeg_body() -> bytes:
    return riff(encode(gradient(64, 64), "JPEG"))


@case(UNSUPPORTED, "RIFF, but AVI")
def _riff_avi() -> bytes:
    return b"RIFF" + le32(100) + b"AVI LIST" + bytes(92)


@case(OK, "JPEG with a ZIP archive appended (polyglot)")
def _polyglot_jpeg_zip() -> bytes:
    return encode(gradient(128, 96), "JPEG") + b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18)


@case(OK, "PNG with a JPEG after IEND")
def _polyglot_png_jpeg() -> bytes:
    return encode(gradient(128, 96), "PNG") + encode(gradient(128, 96), "JPEG")


@case(OK, "GIF that is also a JavaScript comment (GIF89a/*...*/)")
def _polyglot_gif_js() -> bytes:
    return b"GIF89a/*" + encode(gradient(47, 10), "GIF")[8:] + b"*/=1;alert(1);"


@case(OK, "JPEG whose APP segment holds a whole PNG")
def _polyglot_jpeg_with_png() -> bytes:
    return insert_before(encode(gradient(128, 96), "JPEG"), 0xDB, jpeg_segment(0xEB, encode(gradient(64, 64), "PNG")))


@case(UNSUPPORTED, "SVG")
def _svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect/></svg>'


@case(UNSUPPORTED, "JPEG 2000 (a format Pillow decodes, but not one of ours)")
def _jpeg2000() -> bytes:
    return encode(gradient(64, 64), "JPEG2000")


@case(UNSUPPORTED, "ICO (Pillow would decode it)")
def _ico() -> bytes:
    return encode(gradient(64, 64), "ICO")


@case(UNSUPPORTED, "HEIC-style ISO-BMFF header")
def _heic() -> bytes:
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100)


@case(UNSUPPORTED, "PDF")
def _pdf() -> bytes:
    return b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


CASES.sort(key=lambda c: c.name)
BY_NAME: dict[str, Case] = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "duplicate case names"


# ---------------------------------------------------------------------------------- seeds for fuzzing


@functools.cache
def seed_files() -> dict[str, bytes]:
    """Small valid files of every served format and of the odd modes each allows (for mutation)."""
    rgb = gradient(24, 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = {
        "jpeg": encode(rgb, "JPEG", quality=80),
        "jpeg_exif": encode(rgb, "JPEG", exif=exif.tobytes()),
        "jpeg_progressive": encode(rgb, "JPEG", progressive=True),
        "jpeg_grey": encode(rgb.convert("L"), "JPEG"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg_restart": encode(rgb, "JPEG", restart_marker_blocks=2),
        "jpeg_many_scans": progressive_many_scans(64, 4),
        "png": encode(rgb, "PNG"),
        "png_rgba": encode(rgb.convert("RGBA"), "PNG"),
        "png_palette_trns": encode(rgb.convert("P"), "PNG", transparency=0),
        "png_grey16": png(24, 16, constant_rows(48, 16, be16(40000)), depth=16, color=0),
        "png_1bit": encode(rgb.convert("1"), "PNG"),
        "png_interlaced": png(24, 16, zlib.compress(bytes(adam7_bytes(24, 16, 8))), interlace=1),
        "apng": apng(3, 8, 8),
        "gif": encode(rgb.convert("P"), "GIF"),
        "gif_animated": gif(16, 16, gif_frame(16, 16, 2, gif_lzw_constant(256)) * 3, colors_log2=2),
        "webp": encode(rgb, "WEBP"),
        "webp_lossless": encode(rgb.convert("RGBA"), "WEBP", lossless=True),
        "webp_animated": animated_webp(3),
        "bmp": encode(rgb, "BMP"),
        "bmp_rle8": bmp(16, 4, 8, b"\x04\x01\x00\x00" * 4 + b"\x00\x01", compression=1),
        "tiff": encode(rgb, "TIFF"),
        "tiff_deflate": encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_i16": shared_strip_tiff(24, 16, (16,), 4),
        "tiff_float": shared_strip_tiff(24, 16, (32,), 8, sample_format=3),
        "tiff_g4": encode(rgb.convert("1"), "TIFF", compression="group4"),
        "tiff_two_pages": encode(rgb, "TIFF", save_all=True, append_images=[rgb.convert("L")]),
    }
    return seeds
