"""Bytes -> oriented RGB image (Pillow + numpy only), within a pixel and a memory budget.

Pillow (libjpeg-turbo, libpng, libtiff, libwebp, giflib's format in Pillow's own reader) is the only decoder;
this module decides what it may be asked to do, from the header, before any pixel is decoded:

1. :func:`open_image` sniffs the format from the magic bytes (the declared content type is ignored) and opens
   the file with that one Pillow plugin (``formats=[sniffed]``), so no other plugin can take it; the decoded
   format must be the sniffed one.  The pixel count is checked from the header (413 beyond ``max_pixels``).
   Only the first frame or page is ever read: no walk over all frames (``animated`` says whether more exist).
2. :meth:`OpenedImage.decode` is given the fraction of the full resolution the model needs along each axis.
   A JPEG is decoded at the smallest DCT scale that keeps that many pixels (draft mode: 1/2, 1/4 or 1/8).  The
   memory the decode and every conversion will take is computed from the header (:meth:`OpenedImage.cost`)
   and refused with 413 beyond ``max_bytes``.  Then Pillow decodes; an image that is not 8-bit RGB is
   converted to it strip by strip, each strip first reduced by an integer factor (a box filter) to no fewer
   pixels than needed - so no conversion (16-bit scaling, alpha compositing on white, palette, CMYK) ever
   makes a full-size copy, let alone a float64 one.  The EXIF orientation is applied last, on the result.

Box coordinates always refer to the *oriented, full-size* image: :class:`DecodedImage` keeps that size, and
its ``image`` may be smaller but covers exactly the same field of view.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, PngImagePlugin

from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

# (magic prefix, offset, format name)
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
SUPPORTED_FORMATS = tuple(sorted({s[2] for s in _SIGNATURES}))
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that transpose width and height
_ORIENT = {  # EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Bytes a pixel takes in Pillow's own storage (multi-band 8-bit modes are stored at 4 bytes a pixel).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
_RGB_BYTES = 4
# Whole extra copies of the decoded image a format's decoder holds while it decodes: libtiff reads a strip
# (at most the whole image) into its own buffer; libwebp decodes into its buffer, which Pillow then copies.
_DECODER_COPIES = {"TIFF": 1, "WEBP": 1}
# Working memory of one conversion strip (float64 scaling of 16-bit or float data, RGBA compositing).
_STRIP_BYTES = 4 << 20
# Decoders whose time follows neither the pixels nor the bytes, bounded from the header as well:
# - a progressive JPEG is decoded scan by scan over every coefficient block (time ~ scans x blocks, at any draft
#   scale), and libjpeg has no scan limit: 7000x7000 grey in 3000 scans (0.37 MB) took 16-29 s here. The scans are
#   not in the header, but each starts with the marker bytes FF DA, which cannot occur inside entropy-coded data
#   (an FF there is followed by 00 or a restart marker): their count in the file bounds the scans from above.
#   2e8 block-scans is about 2 s of libjpeg-turbo here, and 190 scans of a 50 MP photo (encoders write about 10).
# - Pillow decodes RLE-compressed BMP in Python: a 7000x7000 RLE8 of end-of-line codes (29 kB) took 7.9 s.
_MAX_BLOCK_SCANS = 200_000_000
_MAX_RLE_BMP_PIXELS = 8_000_000
_FORMAT_READS_AS = {"JPEG": ("JPEG", "MPO")}  # a JPEG with an MP index (phones' HDR, depth) reads as MPO
_TEXT_CHUNK_BYTES = 1 << 20  # PNG text / ICC chunks: largest decompressed chunk, and all of them together
_TEXT_TOTAL_BYTES = 8 << 20


def configure_pillow(max_pixels: int) -> None:
    """Pillow's own process-wide limits, set from the service's: its decompression-bomb check at
    ``max_pixels`` (raised as an error, never a warning - the service refuses beyond it anyway), no
    truncated images, and PNG metadata chunks decompressed to at most 1 MiB each and 8 MiB in all."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    PngImagePlugin.MAX_TEXT_CHUNK = _TEXT_CHUNK_BYTES
    PngImagePlugin.MAX_TEXT_MEMORY = _TEXT_TOTAL_BYTES


@dataclass(frozen=True)
class DecodedImage:
    """An oriented RGB image.  ``width``/``height`` are the full oriented size; ``image`` may be
    smaller (JPEG draft, or a reduction) but covers exactly the same field of view."""

    image: Image.Image
    width: int
    height: int
    format: str
    mode: str
    animated: bool
    orientation: int

    @property
    def resolution(self) -> float:
        """The fraction of the full resolution ``image`` holds along its poorer axis (1: all of it)."""
        return min(self.image.width / self.width, self.image.height / self.height)


def sniff_format(data: bytes) -> str:
    """Image format from magic bytes; UnsupportedMediaType when it is not one we decode."""
    for magic, offset, name in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic and (name != "WEBP" or data[:4] == b"RIFF"):
            return name
    raise UnsupportedMediaType(
        f"the upload is not a supported image (expected one of {', '.join(SUPPORTED_FORMATS)}, "
        "detected from its bytes)",
        field="image",
    )


def pixel_bytes(mode: str) -> int:
    """Bytes a pixel of ``mode`` takes in Pillow's storage."""
    return _PIXEL_BYTES.get(mode, 4)


def reduction_factor(size: tuple[int, int], fraction: float) -> int:
    """The largest of 8, 4, 2, 1 by which an image of ``size`` (w, h) can be reduced and still keep
    ``fraction`` of its pixels along each axis - the rule of Pillow's JPEG ``draft`` for its DCT scales."""
    req_w, req_h = _draft_request(size, fraction)
    ratio = min(size[0] // req_w, size[1] // req_h)
    return next(s for s in (8, 4, 2, 1) if ratio >= s)


@dataclass
class OpenedImage:
    """An upload whose header was read and checked; no pixel decoded yet (:meth:`decode` does).

    ``orientation`` is None while unknown: a PNG's eXIf chunk may follow its pixels, and Pillow decodes the
    image to find it; it is then costed as if it were set, and read after decoding."""

    im: ImageFile.ImageFile
    format: str
    size: tuple[int, int]  # as stored, before orientation
    orientation: int | None

    @property
    def width(self) -> int:
        return _oriented(self.size, self.orientation or 1)[0]

    @property
    def height(self) -> int:
        return _oriented(self.size, self.orientation or 1)[1]

    def cost(self, fraction: float) -> tuple[int, int, int]:
        """(bytes, factor, scale) of decoding for ``fraction`` of the full resolution: the peak memory of the
        decode and of every conversion (from the header), the reduction factor applied before converting, and
        the JPEG DCT scale denominator (1 when not drafted).  Pure: changes nothing on the image."""
        w, h = self.size
        mode, scale = self.im.mode, 1
        if self.format == "JPEG" and 0 < fraction < 1:
            scale = _draft_scale(self.im, fraction)
        dw, dh = math.ceil(w / scale), math.ceil(h / scale)
        decoded = dw * dh * pixel_bytes(mode) * (1 + _DECODER_COPIES.get(self.format, 0))
        if self.format == "JPEG" and self.im.info.get("progressive"):
            decoded += _progressive_coefficients(self.im, w, h)
        if mode == "RGB" and self.orientation == 1:  # decoded as it is served: nothing converted or copied
            return decoded, 1, scale
        factor = reduction_factor((dw, dh), min(1.0, fraction * scale))
        out = math.ceil(dw / factor) * math.ceil(dh / factor) * _RGB_BYTES
        return decoded + 2 * out + _STRIP_BYTES, factor, scale  # the converted image, then its transposition

    def decode(
        self, fraction: float, max_bytes: int, reserve: Callable[[int, str], None] | None = None
    ) -> DecodedImage:
        """Decode for ``fraction`` of the full resolution (1: all of it), within ``max_bytes`` (413 beyond);
        ``reserve(bytes, what)`` is called with that cost first, once it is within ``max_bytes``."""
        need, factor, scale = self.cost(fraction)
        what = f"decoding this {self.width}x{self.height} {self.format} ({self.im.mode}) image"
        if need > max_bytes:
            raise PayloadTooLarge(f"{what} would take {need} bytes, over the limit of {max_bytes}", field="image")
        if reserve is not None:
            reserve(need, what)
        im: Image.Image = self.im
        mode = im.mode
        animated = _animated(im)
        try:
            if scale > 1:
                im.draft("RGB", _draft_request(self.size, fraction))
            im.load()
            orientation = self.orientation if self.orientation is not None else _orientation(im)
            if im.mode != "RGB" or (factor > 1 and orientation != 1):  # RGB as it is: served unreduced
                im = _to_rgb(im, factor)
            if orientation in _ORIENT:
                im = im.transpose(_ORIENT[orientation])
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge(f"image has too many pixels ({exc})", field="image") from exc
        except Exception as exc:  # whatever a decoder raises on untrusted bytes: the image cannot be decoded
            raise InvalidImage(
                f"cannot decode the {self.format} image: it is corrupt or truncated", field="image"
            ) from exc
        width, height = _oriented(self.size, orientation)
        return DecodedImage(im, width, height, self.format, mode, animated, orientation)


def open_image(data: bytes, *, max_pixels: int) -> OpenedImage:
    """Sniff, open with that format's plugin only, and check the header: 415 for what is not a supported
    image, 422 for what Pillow cannot read, 413 beyond ``max_pixels``."""
    if not data:
        raise InvalidImage("the upload is empty", field="image")
    fmt = sniff_format(data)
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"image has too many pixels ({exc})", field="image") from exc
    except Exception as exc:  # whatever Pillow's reader raises on untrusted bytes (struct.error, IndexError, ...)
        raise InvalidImage(f"cannot read the {fmt} image: it is corrupt or truncated", field="image") from exc
    if im.format not in _FORMAT_READS_AS.get(fmt, (fmt,)):  # formats=[fmt] makes this all but impossible
        raise UnsupportedMediaType(
            f"the upload reads as {im.format}, not as the {fmt} its bytes announce", field="image"
        )
    w, h = im.size
    if w < 1 or h < 1:
        raise InvalidImage(f"image has no pixels ({w}x{h})", field="image")
    if w * h > max_pixels:
        raise PayloadTooLarge(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}", field="image")
    _check_decode_work(im, fmt, data)
    late_exif = fmt == "PNG" and "exif" not in im.info  # PngImageFile.getexif() would decode the image
    return OpenedImage(im, fmt, (w, h), None if late_exif else _orientation(im))


def decode_image(data: bytes, *, max_pixels: int, max_bytes: int, fraction: float = 1.0) -> DecodedImage:
    """:func:`open_image` then :meth:`OpenedImage.decode`."""
    return open_image(data, max_pixels=max_pixels).decode(fraction, max_bytes)


def _check_decode_work(im: ImageFile.ImageFile, fmt: str, data: bytes) -> None:
    """413 for the decodes whose time the pixel and memory budgets do not bound (see ``_MAX_BLOCK_SCANS``)."""
    w, h = im.size
    if fmt == "JPEG" and im.info.get("progressive"):
        scans = data.count(b"\xff\xda")
        work = scans * _progressive_coefficients(im, w, h) // 128  # 64 coefficients of 2 bytes a block
        if work > _MAX_BLOCK_SCANS:
            raise PayloadTooLarge(
                f"this progressive JPEG ({w}x{h}, up to {scans} scans) would take too long to decode", field="image"
            )
    if fmt == "BMP" and im.info.get("compression") in (1, 2) and w * h > _MAX_RLE_BMP_PIXELS:
        raise PayloadTooLarge(
            f"an RLE-compressed BMP is decoded at most {_MAX_RLE_BMP_PIXELS} pixels large; this one is {w}x{h}",
            field="image",
        )


def _animated(im: Image.Image) -> bool:
    """Whether the file holds more frames; a second frame that cannot be read is none (only the first is used)."""
    try:
        return bool(getattr(im, "is_animated", False))
    except Exception:  # Pillow reads the second frame's header to tell: a truncated one raises anything
        return False


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # any malformed EXIF: no orientation
        return 1
    return value if value in _ORIENT else 1


def _oriented(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    w, h = size
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


def _draft_request(size: tuple[int, int], fraction: float) -> tuple[int, int]:
    """The size asked of Pillow's JPEG ``draft`` for ``fraction`` of ``size``."""
    return max(1, math.ceil(size[0] * fraction)), max(1, math.ceil(size[1] * fraction))


def _draft_scale(im: ImageFile.ImageFile, fraction: float) -> int:
    """The DCT scale denominator ``JpegImageFile.draft`` picks for ``fraction`` (1 where it does not draft:
    a file of several tiles)."""
    return reduction_factor(im.size, fraction) if len(im.tile) == 1 else 1


def _progressive_coefficients(im: Image.Image, width: int, height: int) -> int:
    """Bytes of the coefficient buffer libjpeg keeps for a progressive JPEG: 2 per DCT coefficient of every
    component at full resolution, whatever the draft scale."""
    layers = getattr(im, "layer", None) or [("", 1, 1, 0)] * len(im.getbands())
    hmax = max(int(layer[1]) for layer in layers) or 1
    vmax = max(int(layer[2]) for layer in layers) or 1
    total = 0
    for _, hs, vs, _ in layers:
        cw = math.ceil(width * int(hs) / hmax / 8) * 8
        ch = math.ceil(height * int(vs) / vmax / 8) * 8
        total += cw * ch * 2
    return total


def _to_rgb(im: Image.Image, factor: int) -> Image.Image:
    """8-bit RGB from any Pillow mode, reduced by ``factor`` (a box filter), one strip of rows at a time (a
    strip's height is a multiple of ``factor``, so the result is the whole image's): each strip is converted,
    then reduced - no full-size copy is made.  16-bit (or wider) data is scaled from its peak to 8 bits;
    transparent pixels are composited on white."""
    width, height = im.size
    peak = _peak(im)
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    rows = max(factor, _STRIP_BYTES // (width * 32) // factor * factor)
    for top in range(0, height, rows):
        strip = _strip_to_rgb(im.crop((0, top, width, min(height, top + rows))), peak)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return out


def _peak(im: Image.Image) -> float:
    if im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return 0.0
    extrema = im.getextrema()
    return float(extrema[1])  # type: ignore[arg-type]


def _strip_to_rgb(im: Image.Image, peak: float) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if peak > 255:  # 16-bit (or wider) data: scale its range to 8 bits
            a = a * (255.0 / (65535.0 if peak <= 65535 else peak))
        elif im.mode == "F" and peak <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")
