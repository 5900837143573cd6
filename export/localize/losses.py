"""The box term ``E_box`` of ``E = alpha * E_cls + (1 - alpha) * E_box`` (heads training and fine-tuning alike)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from export.common.boxes import overlap
from export.localize.model import BoxHead


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - GIoU`` of (N, 4) ``rchw`` boxes."""
    o = overlap(pred, target)
    iou = o.inter / o.union.clamp(min=1e-7)
    giou = iou - (o.hull - o.union) / o.hull.clamp(min=1e-7)
    return (1.0 - giou).mean()


def box_loss(corners: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E_box: smooth-L1 on the (unclipped) normalized corners plus the GIoU loss of the clipped box."""
    t = torch.cat([target[:, :2], target[:, :2] + target[:, 2:]], dim=1)
    return F.smooth_l1_loss(corners, t, beta=0.05) + giou_loss(BoxHead.to_rchw(corners), target)
