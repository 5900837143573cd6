from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core.imaging import _to_rgb, decode_image, open_image, reduction_factor, sniff_format
from app.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from tests.conftest import encode, noise_image

BIG = 10**9
BIG_BYTES = 10**10


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_sniffs_and_decodes_every_supported_format(fmt: str) -> None:
    d = decode_image(encode(noise_image(40, 30), fmt), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert (d.width, d.height, d.format, d.image.mode) == (40, 30, fmt, "RGB")


@pytest.mark.parametrize(
    "data", [b"hello world", b"%PDF-1.4 ...", b"\x00" * 64, b"<svg xmlns='http://www.w3.org/2000/svg'/>"]
)
def test_not_an_image_is_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        decode_image(data, max_pixels=BIG, max_bytes=BIG_BYTES)


def test_empty_is_422() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", max_pixels=BIG, max_bytes=BIG_BYTES)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_is_422(fmt: str) -> None:
    data = encode(noise_image(200, 150), fmt)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], max_pixels=BIG, max_bytes=BIG_BYTES)


def test_garbage_after_magic_is_422() -> None:
    with pytest.raises(InvalidImage):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, max_pixels=BIG, max_bytes=BIG_BYTES)


def test_pixel_limit_checked_before_decoding() -> None:
    # A 20000 x 20000 PNG of one colour is a few hundred kB but 400 MP once decoded.
    data = encode(Image.new("L", (20000, 20000)), "PNG")
    assert len(data) < 2_000_000
    with pytest.raises(PayloadTooLarge, match="400000000 pixels"):
        decode_image(data, max_pixels=50_000_000, max_bytes=BIG_BYTES)


def _image_in_mode(mode: str) -> Image.Image:
    ramp = np.arange(16 * 12).reshape(12, 16)
    if mode == "I;16":
        return Image.fromarray((ramp * 300).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 300).astype(np.int32))
    if mode == "F":
        return Image.fromarray((ramp / ramp.max()).astype(np.float32))
    return noise_image(16, 12).convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "1", "I", "I;16", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    img = _image_in_mode(mode)
    assert img.mode == mode
    fmt = "TIFF" if mode in ("CMYK", "I", "F", "YCbCr", "PA") else "PNG"
    d = decode_image(encode(img, fmt), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert d.image.mode == "RGB" and d.image.size == (16, 12)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    d = decode_image(encode(Image.fromarray(arr), "PNG"), max_pixels=BIG, max_bytes=BIG_BYTES)
    px = np.asarray(d.image)
    assert px[1, 1, 0] == 255 and px[0, 0, 0] == 0


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    d = decode_image(encode(img, "PNG"), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert tuple(np.asarray(d.image)[0, 0]) == (255, 255, 255)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    d = decode_image(buf.getvalue(), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert d.animated
    assert np.asarray(d.image)[4, 4, 0] > 200


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1)])
def test_degenerate_sizes_decode(size: tuple[int, int]) -> None:
    d = decode_image(encode(noise_image(*size), "PNG"), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert (d.width, d.height) == size


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_applied(orientation: int) -> None:
    # A landscape picture, red on its left half as stored.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)
    d = decode_image(data, max_pixels=BIG, max_bytes=BIG_BYTES)
    assert d.orientation == orientation
    expected = (20, 40) if orientation >= 5 else (40, 20)
    assert (d.width, d.height) == expected == d.image.size
    assert (
        np.array_equal(np.asarray(d.image), np.asarray(Image.open(io.BytesIO(data)).transpose(_TRANSPOSE[orientation])))
        if orientation != 1
        else True
    )


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def test_jpeg_draft_decodes_fewer_pixels_same_field_of_view() -> None:
    data = encode(noise_image(1600, 1200), "JPEG")
    d = decode_image(data, max_pixels=BIG, max_bytes=BIG_BYTES, fraction=224 / 1200)
    assert (d.width, d.height) == (1600, 1200)
    assert d.image.width < 1600 and d.image.width >= 224 and d.image.height >= 224
    assert abs(d.image.width / d.image.height - 4 / 3) < 0.02
    assert d.resolution == min(d.image.width / 1600, d.image.height / 1200) == 0.25  # 1/4: 400x300 >= 224
    full = decode_image(data, max_pixels=BIG, max_bytes=BIG_BYTES, fraction=1.0)
    assert full.resolution == 1.0


def test_sniff_webp_needs_riff() -> None:
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    with pytest.raises(UnsupportedMediaType):
        sniff_format(b"XXXX\x00\x00\x00\x00WEBPVP8 ")


def _photo_jpeg(w: int, h: int, orientation: int = 1, **save: object) -> bytes:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([128 + 100 * np.sin(x / (9 + 7 * k) + y / (13 + 3 * k)) for k in range(3)], axis=-1)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    return encode(Image.fromarray(rgb.astype(np.uint8)), "JPEG", exif=exif, quality=90, **save)


# --- the decode budget: what is costed from the header is what Pillow then does -------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 900), st.integers(1, 900), st.floats(0.01, 1.0))
def test_the_costed_draft_scale_is_the_one_pillow_picks(w: int, h: int, fraction: float) -> None:
    """The budget is computed for the DCT scale Pillow's draft will choose: the decoded size is as costed."""
    opened = open_image(encode(Image.new("RGB", (w, h)), "JPEG"), max_pixels=BIG)
    _, _, scale = opened.cost(fraction)
    decoded = opened.decode(fraction, BIG_BYTES)
    assert decoded.image.size == (-(-w // scale), -(-h // scale))
    assert decoded.image.width >= w * fraction - 1 and decoded.image.height >= h * fraction - 1


def test_decode_budget_refuses_from_the_header_with_413() -> None:
    data = encode(Image.new("RGBA", (2000, 1000)), "PNG")
    opened = open_image(data, max_pixels=BIG)
    need, factor, _ = opened.cost(1.0)
    assert factor == 1 and need >= 2000 * 1000 * 4 * 3  # the RGBA decode, its RGB conversion and its transposition
    with pytest.raises(PayloadTooLarge, match="would take"):
        opened.decode(1.0, need - 1)
    assert open_image(data, max_pixels=BIG).decode(1.0, need).image.size == (2000, 1000)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "PA", "L", "1", "I;16", "I", "F", "CMYK"])
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_strip_by_strip_conversion_is_the_whole_image_conversion(mode: str, factor: int) -> None:
    """Converting (and reducing) in strips gives exactly the image a whole-image conversion would give."""
    rng = np.random.default_rng(7)
    size = (301, 1500)  # tall enough for several strips at this width
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16)).convert(mode)
        if mode == "F":
            img = Image.fromarray(rng.random((size[1], size[0])).astype(np.float32), "F")
    else:
        img = base.convert(mode)
    from app.core import imaging

    whole = _to_rgb(img, factor)
    old = imaging._STRIP_BYTES
    try:
        imaging._STRIP_BYTES = 1  # one strip of `factor` rows at a time
        strips = _to_rgb(img, factor)
    finally:
        imaging._STRIP_BYTES = old
    assert whole.mode == strips.mode == "RGB" and whole.size == (-(-size[0] // factor), -(-size[1] // factor))
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(strips))


def test_sixteen_bit_grey_is_scaled_not_clipped_after_reduction() -> None:
    a = np.full((800, 600), 65535, np.uint16)
    a[:400] = 257 * 100
    d = decode_image(encode(Image.fromarray(a), "PNG"), max_pixels=BIG, max_bytes=BIG_BYTES, fraction=0.25)
    assert d.image.size == (150, 200)  # reduced by 4 before the conversion
    px = np.asarray(d.image)
    assert px[0, 0].tolist() == [100, 100, 100] and px[-1, -1].tolist() == [255, 255, 255]


def test_only_the_first_frame_is_read_and_animation_is_a_flag() -> None:
    frames = [Image.new("L", (4, 4), v) for v in (10, 20, 30)]
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    d = decode_image(buf.getvalue(), max_pixels=BIG, max_bytes=BIG_BYTES)
    assert d.animated and np.asarray(d.image)[0, 0].tolist() == [10, 10, 10]


@pytest.mark.parametrize("size", [(7, 5), (64, 48)])
def test_reduction_factor_keeps_the_fraction(size: tuple[int, int]) -> None:
    for fraction in (0.05, 0.13, 0.26, 0.5, 0.51, 1.0):
        f = reduction_factor(size, fraction)
        assert f in (1, 2, 4, 8)
        assert -(-size[0] // f) >= size[0] * fraction - 1e-9 or f == 1
