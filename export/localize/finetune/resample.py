"""Pillow's bilinear resize, bit-exact, on the device (``Image.resize(size, box=crop)`` + mirror) and the
service's normalization.

Evaluation input is bit-identical to the service's (``pre_resize``-d image -> ``Image.resize`` to ``size`` ->
``(x / 255 - 0.5) / 0.5``), and a training crop is bit-identical to ``Image.resize(size, box=crop)`` (+ mirror),
so crop = whole image is exactly the evaluation input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from export.localize.data import MEAN, STD
from export.localize.finetune.augment import full_crops
from export.localize.finetune.device import to_device

PRECISION_BITS = 22  # Pillow's fixed-point resampling of 8-bit images (32 - 8 - 2)


def _taps(scale_max: float) -> int:
    """Taps per output pixel that hold Pillow's bilinear support at this (largest) scale, with an ulp of room."""
    support = 1.0 if scale_max < 0.999 else scale_max * (1 + 1e-6)
    return math.ceil(support) * 2 + 1


def _pil_coeffs(
    in_size: int, start: torch.Tensor, length: torch.Tensor, out_size: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's bilinear coefficients for one axis, per image (``precompute_coeffs`` + ``normalize_coeffs_8bpc``).

    ``start``/``length`` (n,) float64: the source interval in pixels; ``k`` taps (>= Pillow's ``ksize``, extra
    taps get weight 0).  Returns (first tap (n, out) int64, integer weights (n, out, k) int64 scaled by 2**22),
    computed with Pillow's double-precision formulas on ``start``'s device.
    """
    # Pillow parses the box as C floats and computes ``scale = (double)(in1 - in0) / outSize`` (float subtraction)
    in0, in1 = start.float(), (start + length).float()
    scale = (in1 - in0).double() / out_size
    filterscale = scale.clamp(min=1.0)
    support = filterscale  # bilinear: support 1
    steps = torch.arange(out_size, dtype=torch.float64, device=start.device) + 0.5
    center = in0.double()[:, None] + steps * scale[:, None]
    xmin = torch.trunc(center - support[:, None] + 0.5).clamp(min=0)
    xmax = torch.trunc(center + support[:, None] + 0.5).clamp(max=in_size) - xmin
    x = torch.arange(k, dtype=torch.float64, device=start.device)
    d = ((x + xmin[..., None]) - center[..., None] + 0.5) * (1.0 / filterscale)[:, None, None]
    w = torch.where((d.abs() < 1.0) & (x < xmax[..., None]), 1.0 - d.abs(), torch.zeros_like(d))
    ww = w.sum(-1, keepdim=True)
    w = torch.where(ww != 0, w / torch.where(ww != 0, ww, 1.0), w)
    kk = torch.trunc(0.5 + w * (1 << PRECISION_BITS)).long()
    return xmin.long(), kk


def _resample_axis(img: torch.Tensor, first: torch.Tensor, kk: torch.Tensor, dim: int) -> torch.Tensor:
    """One separable pass over ``dim`` (2: rows, 3: columns) of int64 (n, C, H, W) 8-bit levels, like Pillow."""
    n, c = img.shape[:2]
    out, k = kk.shape[1:]
    idx = (first[..., None] + torch.arange(k, device=img.device)).clamp(max=img.shape[dim] - 1)  # (n, out, k)
    if dim == 3:
        h = img.shape[2]
        g = img.gather(3, idx.view(n, 1, 1, out * k).expand(n, c, h, out * k)).view(n, c, h, out, k)
        acc = (g * kk.view(n, 1, 1, out, k)).sum(-1)
    else:
        w = img.shape[3]
        g = img.gather(2, idx.view(n, 1, out * k, 1).expand(n, c, out * k, w)).view(n, c, out, k, w)
        acc = (g * kk.view(n, 1, out, k, 1)).sum(-2)
    return ((acc + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS).clamp(0, 255)


def resample(images: torch.Tensor, crops: torch.Tensor | None, size: int) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> int64 8-bit levels (n, 3, size, size), bit-identical to Pillow.

    Each image gives ``Image.resize((size, size), BILINEAR, box=crop in pixels)`` (two fixed-point passes,
    horizontal first, exactly Pillow's arithmetic), then a left-right mirror where ``flip``.
    ``crops=None``: the whole image, i.e. the service's stretch of a ``pre_resize``-d image.
    """
    n, _, h, w = images.shape
    if crops is None:
        crops = full_crops(n)
    c_cpu = crops.to("cpu", torch.float64)
    k_cols, k_rows = _taps(float(c_cpu[:, 3].max()) * w / size), _taps(float(c_cpu[:, 2].max()) * h / size)
    c = to_device(c_cpu, images.device)  # coefficients computed on the device, without a host sync
    col0, colk = _pil_coeffs(w, c[:, 1] * w, c[:, 3] * w, size, k_cols)
    row0, rowk = _pil_coeffs(h, c[:, 0] * h, c[:, 2] * h, size, k_rows)
    x = _resample_axis(images.long(), col0, colk, 3)
    x = _resample_axis(x, row0, rowk, 2)
    flip = (c[:, 4] > 0.5).view(n, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def render(images: torch.Tensor, crops: torch.Tensor | None, size: int) -> torch.Tensor:
    """``resample`` then the service's normalization ``(x / 255 - mean) / std`` (float32, same operations)."""
    x = resample(images, crops, size).float() / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pil_reference(images: np.ndarray, crops: np.ndarray | None, size: int) -> np.ndarray:
    """What Pillow gives for ``resample``'s job: (n, 3, size, size) uint8 (for checks and tests)."""
    out = []
    for i, im in enumerate(images):
        img = Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)))
        h, w = im.shape[1:]
        c = [0.0, 0.0, 1.0, 1.0, 0.0] if crops is None else [float(v) for v in crops[i]]
        box = (c[1] * w, c[0] * h, c[1] * w + c[3] * w, c[0] * h + c[2] * h)
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
        if c[4] > 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def resize_check(
    images: np.ndarray, size: int, device: torch.device, crops: torch.Tensor | None = None
) -> dict[str, Any]:
    """``resample`` against Pillow on the same uint8 images (8-bit levels; 0 means bit-identical)."""
    ours = resample(torch.from_numpy(images).to(device), crops, size).cpu().numpy()
    ref = pil_reference(images, None if crops is None else crops.numpy(), size)
    diff = np.abs(ours - ref.astype(np.int64))
    return {
        "n_images": len(images),
        "crops": "whole image" if crops is None else "random crops + flips",
        "max_abs_levels": int(diff.max()),
        "mean_abs_levels": float(diff.mean()),
        "share_of_values_differing": float((diff > 0).mean()),
    }
