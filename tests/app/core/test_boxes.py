from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.boxes import (
    BoxError,
    clip_xyxy,
    iou,
    mask_to_xyxy,
    normalize_xyxy,
    rchw_to_xyxy,
    validate_xyxy,
    xyxy_to_rchw,
)

coord = st.floats(-1e4, 1e4, allow_nan=False)
boxes = st.tuples(coord, coord, coord, coord)


def test_rchw_is_row_col_height_width() -> None:
    # a box 10 px from the left, 20 px from the top, 30 wide, 40 high
    np.testing.assert_allclose(xyxy_to_rchw([10, 20, 40, 60]), [20, 10, 40, 30])
    np.testing.assert_allclose(rchw_to_xyxy([20, 10, 40, 30]), [10, 20, 40, 60])


@given(boxes)
def test_rchw_round_trip(b: tuple[float, float, float, float]) -> None:
    np.testing.assert_allclose(rchw_to_xyxy(xyxy_to_rchw(b)), b, atol=1e-6)


@given(boxes, st.floats(1, 1e4), st.floats(1, 1e4))
def test_normalize_round_trip(b: tuple[float, float, float, float], w: float, h: float) -> None:
    np.testing.assert_allclose(normalize_xyxy(b, w, h) * [w, h, w, h], b, rtol=1e-9, atol=1e-6)


@given(boxes, st.floats(1, 1e4), st.floats(1, 1e4))
def test_clip_stays_inside(b: tuple[float, float, float, float], w: float, h: float) -> None:
    c = clip_xyxy(b, w, h)
    assert 0 <= c[0] <= w and 0 <= c[2] <= w and 0 <= c[1] <= h and 0 <= c[3] <= h


def test_normalize_rejects_empty_image() -> None:
    with pytest.raises(BoxError):
        normalize_xyxy([0, 0, 1, 1], 0, 10)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([5, 5, 5, 10], "positive"),
        ([5, 5, 4, 10], "positive"),
        ([-1, 0, 5, 5], "inside"),
        ([0, 0, 11, 5], "inside"),
        ([0, 0, float("nan"), 5], "finite"),
        ([0, 0, 1], "4"),
    ],
)
def test_validate_rejects(box: list[float], reason: str) -> None:
    with pytest.raises(BoxError, match=reason):
        validate_xyxy(box, 10, 10)


def test_validate_accepts_whole_image() -> None:
    np.testing.assert_allclose(validate_xyxy([0, 0, 10, 8], 10, 8), [0, 0, 10, 8])


def test_iou_known_values() -> None:
    assert iou([0, 0, 2, 2], [0, 0, 2, 2]) == pytest.approx(1.0)
    assert iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(2 / 6)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == pytest.approx(0.0)


@given(boxes, boxes)
def test_iou_symmetric_and_bounded(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    v = float(iou(a, b))
    assert 0.0 <= v <= 1.0 + 1e-12
    assert v == pytest.approx(float(iou(b, a)))


def test_mask_to_xyxy_uses_exclusive_edges() -> None:
    m = np.zeros((5, 6), dtype=bool)
    m[1:3, 2:5] = True
    np.testing.assert_array_equal(mask_to_xyxy(m), [2, 1, 5, 3])
    with pytest.raises(BoxError):
        mask_to_xyxy(np.zeros((3, 3), dtype=bool))
