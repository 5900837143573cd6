"""Box conventions and operations, with the package's one IoU.

* ``rchw_norm`` (the localize model's output and the sidecar's ``box_format``): ``(r, c, h, w)`` = row and
  column of the upper-left corner, height and width, each divided by the image height/width, so a box
  covering the whole image is ``(0, 0, 1, 1)``.
* Tiny ImageNet boxes are *inclusive* pixel indices ``x1, y1, x2, y2`` in ``0..63``: in continuous
  coordinates the box is ``[x1, x2 + 1) x [y1, y2 + 1)``.
* A user CSV/JSONL gives *continuous* pixel coordinates ``x1, y1, x2, y2`` (``x2 = x1 + width``),
  the convention of torchvision/COCO-xyxy; ``inclusive=True`` reads inclusive ones instead.

``overlap`` is the one place where areas are computed: ``box_iou`` (metrics on numpy arrays in float64, and
training statistics on tensors) and the GIoU loss (``export.localize.losses``) both build on it.
"""

from __future__ import annotations

from typing import NamedTuple, overload

import numpy as np
import torch


def xyxy_to_rchw(
    x1: float, y1: float, x2: float, y2: float, *, width: float, height: float, inclusive: bool = False
) -> tuple[float, float, float, float]:
    """Pixel corners -> normalized ``(r, c, h, w)``; ``inclusive`` adds one pixel to x2 and y2."""
    extra = 1.0 if inclusive else 0.0
    x1, x2 = sorted((float(x1), float(x2)))
    y1, y2 = sorted((float(y1), float(y2)))
    r, c = y1 / height, x1 / width
    h, w = (y2 + extra - y1) / height, (x2 + extra - x1) / width
    return (
        float(np.clip(r, 0.0, 1.0)),
        float(np.clip(c, 0.0, 1.0)),
        float(np.clip(h, 0.0, 1.0 - min(r, 1.0))),
        float(np.clip(w, 0.0, 1.0 - min(c, 1.0))),
    )


def flip_box(box: np.ndarray) -> np.ndarray:
    """Horizontal flip of (..., 4) ``rchw_norm`` boxes: ``c -> 1 - c - w``."""
    out = np.array(box, dtype=np.float32, copy=True)
    out[..., 1] = np.clip(1.0 - out[..., 1] - out[..., 3], 0.0, 1.0)
    return out


class Overlap(NamedTuple):
    """Areas of two (..., 4) ``rchw`` box sets, element-wise: intersection, union and enclosing hull."""

    inter: torch.Tensor
    union: torch.Tensor
    hull: torch.Tensor


def overlap(a: torch.Tensor, b: torch.Tensor) -> Overlap:
    """Intersection, union and hull areas of ``rchw`` boxes (differentiable; any leading shape)."""
    a1, a2 = a[..., :2], a[..., :2] + a[..., 2:]
    b1, b2 = b[..., :2], b[..., :2] + b[..., 2:]
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(dim=-1)
    union = a[..., 2:].prod(dim=-1) + b[..., 2:].prod(dim=-1) - inter
    hull = (torch.maximum(a2, b2) - torch.minimum(a1, b1)).prod(dim=-1)
    return Overlap(inter, union, hull)


@overload
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


@overload
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def box_iou(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Element-wise IoU of two (..., 4) sets of ``rchw_norm`` boxes (0 where the union is empty).

    Tensors stay tensors (same device and dtype); numpy arrays are computed in float64 and come back as numpy.
    """
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        o = overlap(a, b)
        return torch.where(o.union > 0, o.inter / torch.where(o.union > 0, o.union, 1.0), 0.0)
    ta = torch.from_numpy(np.array(a, dtype=np.float64))
    tb = torch.from_numpy(np.array(b, dtype=np.float64))
    iou: np.ndarray = box_iou(ta, tb).numpy()
    return iou
