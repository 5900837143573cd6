from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.core.boxes import (
    BoxError,
    clip_xyxy,
    iou,
    joints_frame,
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


def test_joints_frame_puts_the_joints_at_the_span_of_its_sides() -> None:
    # joints 55 wide and 76 high, spanning 0.55 and 0.76 of the frame: a 100 x 100 box about their centre
    pts = [[10, 20], [65, 96], [30, 50]]
    np.testing.assert_allclose(joints_frame(pts, (0.55, 0.76), 0.25), [-12.5, 8, 87.5, 108])
    # a person lying down and seen edge-on: 200 wide, 2 high -> the height is raised to a quarter of the width
    np.testing.assert_allclose(joints_frame([[0, 0], [100, 1]], (0.5, 0.5), 0.25), [-50, -24.5, 150, 25.5])


@given(
    st.lists(st.tuples(coord, coord), min_size=1, max_size=14),
    st.floats(0.05, 1),
    st.floats(0.05, 1),
    st.floats(0.05, 1),
)
@example([(8191.0, 0.0), (-1.663189929339751, 0.0)], 1.0, 1.0, 1.0)  # centre - half rounded past the joint
def test_joints_frame_holds_every_joint_at_its_span_and_aspect(
    pts: list[tuple[float, float]], sx: float, sy: float, ratio: float
) -> None:
    p = np.array(pts)
    x1, y1, x2, y2 = joints_frame(p, (sx, sy), ratio)
    w, h = x2 - x1, y2 - y1
    assert x1 <= p[:, 0].min() and p[:, 0].max() <= x2 and y1 <= p[:, 1].min() and p[:, 1].max() <= y2
    extent = np.maximum(p.max(axis=0) - p.min(axis=0), 1.0)
    assert w >= extent[0] / sx * (1 - 1e-9) and h >= extent[1] / sy * (1 - 1e-9)  # at least the span's size
    assert min(w, h) >= ratio * max(w, h) * (1 - 1e-9)
    np.testing.assert_allclose([(x1 + x2) / 2, (y1 + y2) / 2], (p.max(axis=0) + p.min(axis=0)) / 2, atol=1e-6)


@pytest.mark.parametrize(
    ("pts", "span", "ratio"),
    [
        ([], (0.5, 0.5), 0.25),
        ([[0, np.nan]], (0.5, 0.5), 0.25),
        ([[0, 0]], (0.0, 0.5), 0.25),
        ([[0, 0]], (0.5, 0.5), 2),
    ],
)
def test_joints_frame_refuses_what_is_not_joints_or_a_span(
    pts: list[list[float]], span: tuple[float, float], ratio: float
) -> None:
    with pytest.raises(BoxError):
        joints_frame(np.array(pts, dtype=float).reshape(-1, 2) if pts else np.zeros((0, 2)), span, ratio)
