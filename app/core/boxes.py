"""Box conventions and pure conversions (numpy only).

One convention inside the service: **xyxy** — ``(x1, y1, x2, y2)`` float pixels in continuous
image coordinates, where pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``; so a box that
covers the whole ``W x H`` image is ``(0, 0, W, H)`` and ``x2``/``y2`` are exclusive edges.

The seed's **rchw** — ``(r, c, h, w)``: row and column of the upper-left corner, height, width —
and normalized boxes (divided by the image width/height, in [0, 1]) are produced at the edges by
the conversions below.  Every function takes arrays of shape ``(..., 4)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class BoxError(ValueError):
    """A box is malformed: not finite, empty, negative-sized or outside the image."""


def _as_boxes(boxes: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.shape[-1:] != (4,):
        raise BoxError(f"boxes must have shape (..., 4), got {arr.shape}")
    return arr


def xyxy_to_rchw(boxes: npt.ArrayLike) -> FloatArray:
    """``(x1, y1, x2, y2)`` -> ``(r, c, h, w)`` = ``(y1, x1, y2 - y1, x2 - x1)``.  Shape ``(..., 4)``."""
    b = _as_boxes(boxes)
    return np.stack([b[..., 1], b[..., 0], b[..., 3] - b[..., 1], b[..., 2] - b[..., 0]], axis=-1)


def rchw_to_xyxy(boxes: npt.ArrayLike) -> FloatArray:
    """``(r, c, h, w)`` -> ``(x1, y1, x2, y2)`` = ``(c, r, c + w, r + h)``.  Shape ``(..., 4)``."""
    b = _as_boxes(boxes)
    return np.stack([b[..., 1], b[..., 0], b[..., 1] + b[..., 3], b[..., 0] + b[..., 2]], axis=-1)


def normalize_xyxy(boxes: npt.ArrayLike, width: float, height: float) -> FloatArray:
    """Pixels -> fractions of the image: x / width, y / height.  Shape ``(..., 4)``."""
    if width <= 0 or height <= 0:
        raise BoxError(f"image size must be positive, got {width}x{height}")
    return _as_boxes(boxes) / np.array([width, height, width, height], dtype=np.float64)


def clip_xyxy(boxes: npt.ArrayLike, width: float, height: float) -> FloatArray:
    """Clip boxes to ``[0, width] x [0, height]``.  Shape ``(..., 4)``."""
    b = _as_boxes(boxes).copy()
    b[..., 0::2] = np.clip(b[..., 0::2], 0.0, width)
    b[..., 1::2] = np.clip(b[..., 1::2], 0.0, height)
    return b


def validate_xyxy(box: npt.ArrayLike, width: float, height: float) -> FloatArray:
    """Return one box ``(4,)`` if finite, of positive size and overlapping the image; else BoxError."""
    b = _as_boxes(box)
    if b.shape != (4,):
        raise BoxError(f"expected one box of 4 numbers, got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise BoxError("box coordinates must be finite numbers")
    x1, y1, x2, y2 = b
    if x2 <= x1 or y2 <= y1:
        raise BoxError(f"box must have positive width and height, got {x2 - x1:g}x{y2 - y1:g}")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise BoxError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside the {width}x{height} image")
    return b


def box_area(boxes: npt.ArrayLike) -> FloatArray:
    """Area of xyxy boxes (0 for empty ones).  Shape ``(..., 4)`` -> ``(...)``."""
    b = _as_boxes(boxes)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Intersection over union of xyxy boxes, broadcast over the leading axes."""
    ba, bb = _as_boxes(a), _as_boxes(b)
    lt = np.maximum(ba[..., :2], bb[..., :2])
    rb = np.minimum(ba[..., 2:], bb[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = box_area(ba) + box_area(bb) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def mask_to_xyxy(mask: npt.NDArray[np.bool_]) -> FloatArray:
    """Tightest xyxy box around the True cells of a 2-D mask, in cell units; BoxError if empty."""
    if mask.ndim != 2:
        raise BoxError(f"mask must be 2-D, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise BoxError("empty mask has no box")
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def joints_frame(points: npt.ArrayLike, span: tuple[float, float], min_side_ratio: float) -> FloatArray:
    """The box a pose model frames a person in, around its joints: ``points`` ``(k, 2)`` xy pixels span the
    fractions ``span = (sx, sy)`` of its width and height, about their centre, and neither side is under
    ``min_side_ratio`` times the other (a person seen edge-on).  Extents under 1 px count as 1 px.  Returns one
    xyxy box ``(4,)``, not clipped to the image; BoxError on points that are not ``(k >= 1, 2)`` and finite, or
    a span or ratio outside ``(0, 1]``."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 1 or not np.all(np.isfinite(p)):
        raise BoxError(f"joints must be finite (k, 2) xy points, got shape {p.shape}")
    if not all(0 < s <= 1 for s in (*span, min_side_ratio)):
        raise BoxError(f"span {span} and min_side_ratio {min_side_ratio} must lie in (0, 1]")
    lo, hi = p.min(axis=0), p.max(axis=0)
    w, h = max(hi[0] - lo[0], 1.0) / span[0], max(hi[1] - lo[1], 1.0) / span[1]
    side = max(w, h)
    w, h = max(w, min_side_ratio * side), max(h, min_side_ratio * side)
    centre, half = (lo + hi) / 2, np.array([w, h]) / 2
    # at a span of 1 the edges are the extreme joints, which centre +- half can miss by a rounding
    return np.concatenate([np.minimum(centre - half, lo), np.maximum(centre + half, hi)])
