"""app.core.jpeg8: the 1/8-scale JPEG decoder gives Pillow's draft-mode pixels bit for bit, or steps aside."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core import jpeg8

pytestmark = pytest.mark.skipif(not jpeg8.AVAILABLE, reason="the C extension app.core._jpeg8 was not built")


def photo(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth photo-like picture with some texture (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [128 + 100 * np.sin(x / (7 + 13 * k) + y / (11 + 5 * k) + k) for k in range(3)], axis=-1
    ) + rng.normal(0, 12, (h, w, 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    return im.convert(mode) if mode != "RGB" else im


def jpeg(im: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **save)
    return buf.getvalue()


def pillow_eighth(data: bytes) -> npt.NDArray[np.uint8]:
    """What the service got before: Pillow's draft mode at 1/8 scale."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
    assert im.decoderconfig[0] == 8  # the only scale the service hands to jpeg8
    im.load()
    return np.asarray(im)


@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
@pytest.mark.parametrize("size", [(8, 8), (17, 9), (33, 17), (640, 480), (1001, 767)])
@pytest.mark.parametrize("threads", [1, 2])
def test_same_pixels_as_pillow(subsampling: int, size: tuple[int, int], threads: int) -> None:
    data = jpeg(photo(*size, seed=size[0]), quality=90, subsampling=subsampling)
    want = pillow_eighth(data)
    got = jpeg8.decode(data, threads)
    assert got is not None
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "save",
    [
        {"quality": 5},
        {"quality": 50, "optimize": True},  # image-specific Huffman tables
        {"quality": 100, "subsampling": 0},  # large coefficients, every term kept
        {"quality": 95, "restart_marker_blocks": 4},
        {"quality": 80, "restart_marker_rows": 1, "subsampling": 2},
        {"quality": 75, "restart_marker_blocks": 1000, "optimize": True},
    ],
    ids=["q5", "optimized", "q100-444", "rst-blocks", "rst-rows", "rst-large"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_encoder_options(save: dict[str, object], threads: int) -> None:
    data = jpeg(photo(1200, 900, seed=3), **save)
    got = jpeg8.decode(data, threads)
    assert got is not None
    np.testing.assert_array_equal(got, pillow_eighth(data))


def test_greyscale() -> None:
    data = jpeg(photo(1000, 700, seed=5, mode="L"), quality=85)
    got = jpeg8.decode(data, 2)
    assert got is not None and got.ndim == 2
    np.testing.assert_array_equal(got, pillow_eighth(data))


@pytest.mark.parametrize("split", [1, 50, 300, 500, 700, 999])
def test_any_split_point_gives_the_same_pixels(split: int) -> None:
    """The second thread may start anywhere in the data: where the threads meet changes, the pixels do not."""
    data = jpeg(photo(1600, 1200, seed=7), quality=92)
    want = pillow_eighth(data)
    got, met = jpeg8.decode_info(data, 2, split=split)
    assert got is not None
    np.testing.assert_array_equal(got, want)
    assert met > 0  # on real data the threads do meet (and tests the copy of the second thread's part)


def test_threads_that_never_meet_still_give_the_same_pixels() -> None:
    """On pure noise (long codes, big values) the second thread's guess does not resynchronize within its
    window: the first thread then decodes everything itself, with the same result."""
    rng = np.random.default_rng(11)
    im = Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8), "RGB")
    data = jpeg(im, quality=97)
    got, met = jpeg8.decode_info(data, 2, split=500)
    assert got is not None
    assert met == -1  # the fallback path is what this test is about (this seed, this split)
    np.testing.assert_array_equal(got, pillow_eighth(data))


@pytest.mark.parametrize(
    ("im", "save"),
    [
        (photo(800, 600), {"progressive": True}),
        (photo(800, 600, mode="CMYK"), {}),
    ],
    ids=["progressive", "cmyk"],
)
def test_files_it_does_not_take(im: Image.Image, save: dict[str, object]) -> None:
    assert jpeg8.decode(jpeg(im, quality=90, **save), 2) is None


def test_truncated_and_not_jpeg() -> None:
    data = jpeg(photo(800, 600), quality=90)
    for cut in (len(data) // 2, len(data) - 2, 100, 3):
        assert jpeg8.decode(data[:cut], 2) is None
    assert jpeg8.decode(b"", 2) is None
    assert jpeg8.decode(b"\x89PNG\r\n\x1a\n" + bytes(100), 2) is None


def test_bad_arguments_are_refused_not_crashed() -> None:
    data = jpeg(photo(64, 64), quality=90)
    hd = jpeg8.parse_header(data)
    assert hd is not None
    lay = jpeg8.layout(hd)
    assert lay is not None
    out = np.empty((8, 8, 3), np.uint8)
    scan = memoryview(data)[hd.scan_offset :]
    native = jpeg8._native
    ok = native.decode(scan, hd.tables, lay.slots, lay.comps, lay.mcus_x, lay.mcus_x * lay.mcus_y, 0, 2, out, 8, 8)
    assert ok[0] == 0
    bad = [
        (scan, hd.tables[:-1], lay.slots, lay.comps, lay.mcus_x, 16, 0, 2, out, 8, 8),  # tables size
        (scan, hd.tables, lay.slots[:-1], lay.comps, lay.mcus_x, 16, 0, 2, out, 8, 8),  # slots size
        (scan, hd.tables, lay.slots, lay.comps, lay.mcus_x, 10**9, 0, 2, out, 8, 8),  # MCUs vs output
        (scan, hd.tables, lay.slots, lay.comps, lay.mcus_x, 16, 0, 2, out, 9, 8),  # output size
        (scan, hd.tables, lay.slots, lay.comps, 0, 16, 0, 2, out, 8, 8),
        (scan, hd.tables, b"\xff" * len(lay.slots), lay.comps, lay.mcus_x, 16, 0, 2, out, 8, 8),
        (scan, b"\xff" * len(hd.tables), lay.slots, lay.comps, lay.mcus_x, 16, 0, 2, out, 8, 8),  # bad tables
    ]
    for args in bad:
        status, _ = native.decode(*args)
        assert status < 0


_BASES = (
    jpeg(photo(1024, 768, seed=13), quality=85, subsampling=2),
    jpeg(photo(1024, 768, seed=17), quality=85, restart_marker_blocks=8),
)


def assert_like_pillow_or_declined(data: bytes, threads: int) -> None:
    """jpeg8's result is None, or exactly what Pillow gives on the service's path: Pillow opens the file and
    chooses 1/8 (else the service never calls jpeg8), then decodes it without error (else jpeg8 must decline)."""
    got = jpeg8.decode(data, threads)
    if got is None:
        return
    try:
        im = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError, ValueError):
        return  # the service answers 422 before it would call jpeg8
    try:
        w, h = im.size
        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        if im.decoderconfig[0] != 8:
            return
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        pytest.fail(f"decoded a file Pillow refuses ({exc})")
    np.testing.assert_array_equal(got, np.asarray(im))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(range(len(_BASES))),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=6),
    threads=st.sampled_from([1, 2]),
)
def test_mutated_files_decode_like_pillow_or_step_aside(
    base: int, edits: list[tuple[float, int]], threads: int
) -> None:
    """Any corruption: either exactly Pillow's pixels, or None (and Pillow decides) — never anything else."""
    data = bytearray(_BASES[base])
    for where, value in edits:
        data[min(len(data) - 1, int(where * len(data)))] = value
    assert_like_pillow_or_declined(bytes(data), threads)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(range(len(_BASES))),
    edits=st.lists(st.tuples(st.integers(2, 700), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_mutated_headers_decode_like_pillow_or_step_aside(base: int, edits: list[tuple[int, int]]) -> None:
    """The same property with the corruption in the markers and tables (segment lengths, sizes, sampling,
    table ids, SOS fields): what libjpeg refuses, jpeg8 must decline."""
    data = bytearray(_BASES[base])
    for where, value in edits:
        data[where] = value
    assert_like_pillow_or_declined(bytes(data), 2)


@pytest.mark.data
def test_real_photos_from_the_datasets(shared_data: Path) -> None:
    """Real encoders' files (LSP, LSPET, Tiny ImageNet): every one decodes to Pillow's 1/8 pixels.  All 21,000
    of them were checked once (docs/performance.md, section 8); here every 20th, about 1,000 files."""
    files = sorted((shared_data / "lsp_train" / "images").glob("*.jpg"))
    files += sorted((shared_data / "lspet" / "images").glob("*.jpg"))
    files += sorted((shared_data / "tiny_imagenet_200" / "val" / "images").glob("*.JPEG"))
    checked = 0
    for f in files[::20]:
        data = f.read_bytes()
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        im.draft(im.mode if im.mode == "L" else "RGB", (max(1, w // 8), max(1, h // 8)))
        if im.decoderconfig[:1] != (8,):
            continue
        got = jpeg8.decode(data, 2)
        im.load()
        assert got is not None, f.name
        np.testing.assert_array_equal(got, np.asarray(im), err_msg=f.name)
        checked += 1
    assert checked >= 1000
