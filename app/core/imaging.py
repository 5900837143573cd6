"""Bytes -> oriented RGB image (Pillow + numpy only).

The format is sniffed from the bytes (the declared content type is ignored); the pixel count is
checked from the header before any pixel is decoded (decompression bombs); JPEGs are decoded at a
reduced scale (DCT draft mode) when the model needs fewer pixels; EXIF orientation is applied;
every mode (palette, greyscale, 16-bit, CMYK, alpha) becomes 8-bit RGB; animations give their
first frame.  Box coordinates always refer to the *oriented, full-size* image.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core import jpeg8
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
Decoder = Literal["pillow", "jpeg8"]  # what decoded the pixels: Pillow, or app.core.jpeg8 (1/8 scale)
_ORIENT = {  # EXIF orientation -> the transpose that undoes it (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """An oriented RGB image.  ``width``/``height`` are the full oriented size; ``image`` may be
    smaller (JPEG draft) but covers exactly the same field of view."""

    image: Image.Image
    width: int
    height: int
    format: str
    mode: str
    frames: int
    orientation: int
    decoder: Decoder = "pillow"


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


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; transparent pixels are composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        peak = float(a.max()) if a.size else 0.0
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


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    needed_fraction: Callable[[int, int], float] | None = None,
    jpeg_threads: int = 0,
) -> DecodedImage:
    """Decode an upload.

    ``needed_fraction(width, height)`` (oriented size) tells what fraction of the full resolution the
    model needs along each axis (e.g. 224 / 4000); a JPEG is then decoded at the smallest DCT scale
    that still gives that many pixels (Pillow's draft mode: 1/2, 1/4 or 1/8).  When that scale is
    1/8 and ``jpeg_threads`` > 0, :mod:`app.core.jpeg8` decodes it (same pixels, on up to two
    threads); files it does not take go to Pillow.
    """
    if not data:
        raise InvalidImage("the upload is empty", field="image")
    fmt = sniff_format(data)
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image has too many pixels ({exc})", field="image") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"cannot read the {fmt} image: it is corrupt or truncated", field="image") from exc
    w, h = im.size
    if w < 1 or h < 1:
        raise InvalidImage(f"image has no pixels ({w}x{h})", field="image")
    if w * h > max_pixels:
        raise PayloadTooLarge(
            f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}", field="image"
        )
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:
        orientation = 1
    frames = int(getattr(im, "n_frames", 1))
    mode = im.mode
    width, height = (h, w) if orientation in _SWAPS_AXES else (w, h)
    fraction = needed_fraction(width, height) if needed_fraction is not None else 1.0
    decoder: Decoder = "pillow"
    if fmt == "JPEG" and 0 < fraction < 1:
        im.draft("RGB", (max(1, math.ceil(w * fraction)), max(1, math.ceil(h * fraction))))
        if jpeg_threads > 0 and getattr(im, "decoderconfig", ())[:1] == (jpeg8.SCALE,):  # Pillow chose 1/8
            pixels = jpeg8.decode(data, jpeg_threads)
            if pixels is not None and pixels.shape[:2] == (im.size[1], im.size[0]):
                im = Image.fromarray(pixels)
                decoder = "jpeg8"
    try:
        im.load()
        if decoder == "jpeg8":  # a new image: no EXIF of its own to transpose by
            oriented = im.transpose(_ORIENT[orientation]) if orientation in _ORIENT else im
        else:
            oriented = ImageOps.exif_transpose(im) if orientation != 1 else im
        rgb = _to_rgb(oriented)
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image has too many pixels ({exc})", field="image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"cannot decode the {fmt} image: it is corrupt or truncated", field="image") from exc
    return DecodedImage(rgb, width, height, fmt, mode, frames, orientation, decoder)
