from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.core.boxes import BoxError
from app.core.fitting import FitMode, InputSpec, fit_image
from app.core.imaging import DecodedImage

sizes = st.integers(1, 3000)


def decoded(w: int, h: int, draft: float = 1.0) -> DecodedImage:
    im = Image.new("RGB", (max(1, round(w * draft)), max(1, round(h * draft))), (255, 0, 0))
    return DecodedImage(im, w, h, "PNG", "RGB", 1, 1)


@settings(max_examples=60, deadline=None)
@given(
    sizes,
    sizes,
    st.sampled_from(list(FitMode)),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_input_boxes_map_inside_the_image(
    w: int, h: int, mode: FitMode, a: float, b: float, c: float, d: float
) -> None:
    spec = InputSpec(32, 48, fit=mode)
    _, fit = fit_image(decoded(w, h, draft=min(1.0, 200 / max(w, h))), spec)
    # any box inside the content rectangle maps inside the image
    cx1, cy1, cx2, cy2 = fit.content
    xs = sorted((cx1 + a * (cx2 - cx1), cx1 + b * (cx2 - cx1)))
    ys = sorted((cy1 + c * (cy2 - cy1), cy1 + d * (cy2 - cy1)))
    x1, y1, x2, y2 = fit.input_boxes_to_image([xs[0], ys[0], xs[1], ys[1]])
    eps = 1e-6 * max(w, h)
    assert -eps <= x1 <= x2 <= w + eps and -eps <= y1 <= y2 <= h + eps
    # and the content rectangle is exactly the whole image
    np.testing.assert_allclose(fit.input_boxes_to_image(fit.content), [0, 0, w, h], atol=eps)


def test_stretch_fills_the_input_with_the_whole_image() -> None:
    batch, fit = fit_image(decoded(640, 480), InputSpec(32, 32))
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 0], 1.0)  # red -> (1 - .5) / .5
    np.testing.assert_allclose(batch[0, 1], -1.0)
    assert fit.content == (0, 0, 32, 32)


def test_letterbox_keeps_aspect_and_pads_with_zero() -> None:
    batch, fit = fit_image(decoded(640, 320), InputSpec(32, 32, fit=FitMode.letterbox))
    assert fit.content == (0, 8, 32, 24)
    np.testing.assert_allclose(batch[0, :, :8], 0.0)
    np.testing.assert_allclose(batch[0, 0, 8:24], 1.0)
    np.testing.assert_allclose(fit.input_boxes_to_image([[16, 16, 16, 16]]), [[320, 160, 320, 160]])


def test_region_crop_maps_back() -> None:
    _, fit = fit_image(decoded(400, 300), InputSpec(64, 64), region=(100, 50, 300, 250))
    np.testing.assert_allclose(fit.input_boxes_to_image([0, 0, 64, 64]), [100, 50, 300, 250])
    np.testing.assert_allclose(fit.region_points_to_image([[0.5, 0.5], [0, 1]]), [[200, 150], [100, 250]])


def test_region_reads_the_right_pixels() -> None:
    arr = np.zeros((100, 100, 3), dtype=np.uint8)
    arr[:, 50:] = 255  # right half white
    d = DecodedImage(Image.fromarray(arr), 100, 100, "PNG", "RGB", 1, 1)
    batch, _ = fit_image(d, InputSpec(8, 8), region=(60, 0, 100, 100))
    np.testing.assert_allclose(batch, 1.0)


def test_pre_resize_then_input() -> None:
    batch, fit = fit_image(decoded(640, 480), InputSpec(32, 32, pre_resize=(8, 8)))
    assert batch.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(fit.input_boxes_to_image([0, 0, 32, 32]), [0, 0, 640, 480])


@pytest.mark.parametrize("region", [(0, 0, 0, 10), (-5, 0, 10, 10), (0, 0, 500, 10), (5, 5, 4, 10)])
def test_bad_region(region: tuple[float, float, float, float]) -> None:
    with pytest.raises(BoxError):
        fit_image(decoded(100, 100), InputSpec(8, 8), region=region)


def test_needed_fraction_uses_pre_resize() -> None:
    assert InputSpec(224, 224, pre_resize=(64, 64)).needed_fraction(640, 480) == pytest.approx(64 / 480)
    assert InputSpec(224, 224).needed_fraction(448, 2240) == pytest.approx(0.5)


def test_the_batch_is_the_normalization_formula_of_the_resized_pixels() -> None:
    rng = np.random.default_rng(0)
    d = DecodedImage(Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)), 50, 30, "PNG", "RGB", 1, 1)
    spec = InputSpec(24, 40, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # height 24, width 40
    batch, _ = fit_image(d, spec)
    pixels = np.asarray(d.image.resize((40, 24), Image.Resampling.BILINEAR), dtype=np.float64)
    want = (pixels * spec.scale - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(batch[0], want.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
