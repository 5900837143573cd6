"""Training augmentation on the device: random-resized crops + flips (boxes transformed alike), degradation.

Random numbers come from a CPU generator, so CPU and GPU runs draw the same crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from export.localize.finetune.device import to_device


@dataclass
class AugmentConfig:
    """Random-resized crop (area fraction ``scale``, aspect ``ratio``) + horizontal flip, per image and step."""

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    min_box_keep: float = 0.5  # a crop keeping less of the object's box than this is replaced by the whole image
    # Resolution augmentation: with probability ``degrade`` an image is brought down to a random side in
    # [degrade_min, H) (antialiased bilinear) and back up before cropping, so the network does not depend on the
    # exact resampling chain of the 64-px thumbnails (a photo reaches it through the service's pre-resize).
    degrade: float = 0.0
    degrade_min: int = 32


def degrade_images(images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> the same with a random subset blurred by a down-and-up resampling (see ``degrade``).

    One random side per batch (drawn on the CPU generator ``gen``, like the crops); a no-op when ``degrade`` is 0.
    """
    if cfg.degrade <= 0:
        return images
    n, _, h, w = images.shape
    pick = torch.rand(n, generator=gen) < cfg.degrade
    side = int(torch.randint(min(cfg.degrade_min, h - 1), h, (1,), generator=gen))
    if not bool(pick.any()):
        return images
    idx = to_device(pick.nonzero().squeeze(1), images.device)
    sub = images[idx].float()
    small = F.interpolate(sub, size=(side, max(1, round(side * w / h))), mode="bilinear", antialias=True)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    out = images.clone()
    out[idx] = back.round().clamp(0, 255).to(torch.uint8)
    return out


def full_crops(n: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 5) crops ``(y0, x0, h, w, flip)`` covering the whole image."""
    crops = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]).repeat(n, 1)
    if flip is not None:
        crops[:, 4] = flip
    return crops


def crop_boxes(boxes: torch.Tensor, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rchw_norm`` boxes seen through ``crops`` (clipped to the crop, mirrored where flipped).

    Returns the new boxes (n, 4) and the fraction of each box's area that stays inside its crop.
    """
    r, c, h, w = boxes.unbind(1)
    y0, x0, ch, cw, flip = crops.unbind(1)
    y1 = ((r - y0) / ch).clamp(0, 1)
    y2 = ((r + h - y0) / ch).clamp(0, 1)
    x1 = ((c - x0) / cw).clamp(0, 1)
    x2 = ((c + w - x0) / cw).clamp(0, 1)
    kept = (y2 - y1) * (x2 - x1) * ch * cw / (h * w).clamp(min=1e-8)
    f = flip > 0.5
    x1, x2 = torch.where(f, 1 - x2, x1), torch.where(f, 1 - x1, x2)
    return torch.stack([y1, x1, y2 - y1, x2 - x1], dim=1), kept


def sample_crops(boxes: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops for ``boxes`` (n, 4) on the CPU generator ``gen``; returns (crops (n, 5), new boxes (n, 4))."""
    n = boxes.shape[0]
    u = torch.rand(n, 5, generator=gen)
    area = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
    lo, hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, 1])  # width / height
    cw = torch.sqrt(area * ratio).clamp(max=1.0)
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    crops = torch.stack([u[:, 2] * (1 - ch), u[:, 3] * (1 - cw), ch, cw, (u[:, 4] < cfg.flip).float()], dim=1)
    _, kept = crop_boxes(boxes, crops)
    bad = kept < cfg.min_box_keep
    crops[bad] = full_crops(int(bad.sum()), crops[bad, 4])
    new_boxes, _ = crop_boxes(boxes, crops)
    return crops, new_boxes
