from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from app.core.cam import normalize_map, resample
from app.core.regions import label_regions

EIGHT = np.ones((3, 3), dtype=bool)


def assert_as_scipy(mask: np.ndarray) -> None:
    labels, n = label_regions(mask)
    want, want_n = ndimage.label(mask, structure=EIGHT)
    assert n == want_n
    np.testing.assert_array_equal(labels, want)
    assert labels.dtype == want.dtype


@settings(max_examples=300, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 24), st.integers(1, 24))))
def test_labels_equal_scipy_on_any_mask(mask: np.ndarray) -> None:
    assert_as_scipy(mask)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_labels_equal_scipy_on_thresholded_maps(r: int, c: int, threshold: float, seed: int) -> None:
    """The masks the service labels: a small grid upsampled bilinearly onto a raster, at a threshold."""
    grid = np.random.default_rng(seed).normal(size=(r, c))
    rows, cols = (np.arange(96) + 0.5) * (r / 96), (np.arange(128) + 0.5) * (c / 128)
    assert_as_scipy(normalize_map(resample(grid, rows, cols)) >= threshold)


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((3, 4), bool),
        np.ones((3, 4), bool),
        np.eye(5, dtype=bool),  # a diagonal: one region by 8-connectivity
        np.eye(5, dtype=bool)[::-1],  # the other diagonal
        np.indices((6, 7)).sum(axis=0) % 2 == 0,  # a checkerboard: one region
        np.array([[1, 0, 1, 0, 1]], bool),  # one row, three regions
        np.array([[1], [0], [1]], bool),  # one column, two regions
        np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1]], bool),  # a U: its arms meet only at the bottom
    ],
)
def test_labels_equal_scipy_on_edge_cases(mask: np.ndarray) -> None:
    assert_as_scipy(mask)


def test_diagonal_touch_joins_but_a_gap_does_not() -> None:
    labels, n = label_regions(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool))
    assert n == 2
    assert labels[0, 0] == labels[1, 1] == 1 and labels[3, 0] == 2


def test_rejects_a_mask_that_is_not_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        label_regions(np.ones((2, 2, 2), bool))


def test_the_service_imports_no_scipy() -> None:
    """scipy.ndimage cost 0.3-0.4 s of start-up and 19 MB; the app, its routes and its models' code load without it."""
    code = "import sys, app.factory, app.services.cam; print(sorted(m for m in sys.modules if m.startswith('scipy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
