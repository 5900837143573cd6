from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.core.cam import (
    CamNorm,
    CamRegion,
    bilinear_weights,
    cam_scores,
    class_activation_maps,
    normalize_map,
    region_mask,
    resample,
    threshold_box,
)

small = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_cam_identity_equals_gap_dense(k: int, r: int, c: int, classes: int, seed: int) -> None:
    """mean_rc(sum_k W[y,k] V[k]) + b == W @ mean_rc(V) + b, the logits of a GAP -> dense network."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(k, r, c)).astype(np.float32)
    w = rng.normal(size=(classes, k)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32)
    logits = w.astype(np.float64) @ v.astype(np.float64).mean(axis=(1, 2)) + b
    maps = class_activation_maps(v, w, np.arange(classes))
    np.testing.assert_allclose(cam_scores(maps, b), logits, rtol=1e-4, atol=1e-4)


def test_class_activation_maps_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="do not match"):
        class_activation_maps(np.zeros((3, 2, 2)), np.zeros((4, 5)), [0])


def test_bilinear_rows_sum_to_one_and_clamp() -> None:
    m = bilinear_weights(4, np.linspace(-3, 7, 50))
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    assert m[0, 0] == 1.0 and m[-1, -1] == 1.0


def upsample(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``resample`` at the pixel centres of an ``out_h`` x ``out_w`` raster over the grid (as the service samples)."""
    rows = (np.arange(out_h) + 0.5) * (grid.shape[0] / out_h)
    cols = (np.arange(out_w) + 0.5) * (grid.shape[1] / out_w)
    return resample(grid, rows, cols)


def test_upsample_matches_half_pixel_bilinear() -> None:
    """2x upsampling of [0, 1] with half-pixel centres (torch align_corners=False) gives these values."""
    out = upsample(np.array([[0.0, 1.0]]), 1, 4)
    np.testing.assert_allclose(out[0], [0.0, 0.25, 0.75, 1.0])


@given(
    arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=small),
    st.integers(1, 40),
    st.integers(1, 40),
)
def test_upsample_stays_within_range(grid: np.ndarray, h: int, w: int) -> None:
    out = upsample(grid, h, w)
    assert out.shape == (h, w)
    assert out.min() >= grid.min() - 1e-9 and out.max() <= grid.max() + 1e-9


@given(
    arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=small),
    st.sampled_from(list(CamNorm)),
)
def test_normalize_in_unit_interval(m: np.ndarray, method: CamNorm) -> None:
    n = normalize_map(m, method)
    assert n.min() >= 0.0 and n.max() <= 1.0 + 1e-12


maps = arrays(np.float64, st.tuples(st.integers(1, 16), st.integers(1, 16)), elements=st.floats(0, 1, width=32))


@settings(max_examples=150)
@given(maps, st.floats(0, 1), st.floats(0, 1), st.sampled_from([CamRegion.peak, CamRegion.all]))
def test_higher_threshold_never_grows_the_box(m: np.ndarray, t1: float, t2: float, region: CamRegion) -> None:
    lo, hi = sorted((t1, t2))
    big, small_box = threshold_box(m, lo, region), threshold_box(m, hi, region)
    assert small_box[0] >= big[0] and small_box[1] >= big[1] and small_box[2] <= big[2] and small_box[3] <= big[3]


@given(maps, st.floats(0, 1), st.sampled_from(list(CamRegion)))
def test_box_inside_map_and_holds_region(m: np.ndarray, t: float, region: CamRegion) -> None:
    x1, y1, x2, y2 = threshold_box(m, t, region)
    assert 0 <= x1 < x2 <= m.shape[1] and 0 <= y1 < y2 <= m.shape[0]
    mask = region_mask(m, t, region)
    assert mask[int(y1) : int(y2), int(x1) : int(x2)].sum() == mask.sum()


def test_peak_region_picks_the_blob_with_the_maximum() -> None:
    m = np.zeros((10, 10))
    m[0:2, 0:6] = 0.5  # big, weaker blob
    m[7:9, 7:9] = 1.0  # small, strongest blob
    np.testing.assert_array_equal(threshold_box(m, 0.2, CamRegion.peak), [7, 7, 9, 9])
    np.testing.assert_array_equal(threshold_box(m, 0.2, CamRegion.largest), [0, 0, 6, 2])
    np.testing.assert_array_equal(threshold_box(m, 0.2, CamRegion.all), [0, 0, 9, 9])


def test_threshold_out_of_range() -> None:
    with pytest.raises(ValueError, match="threshold"):
        threshold_box(np.ones((2, 2)), 1.5)
