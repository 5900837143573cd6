"""The fine-tuned network, its optimizer parameter groups and its training mode (BatchNorm policy)."""

from __future__ import annotations

from typing import Any

from torch import nn

from export.common.sidecar import imagenet_labels
from export.localize.model import LocalizeNet, build_lite0, build_tiny


def build_model(backbone: str, size: int, wnids: list[str], seed: int) -> LocalizeNet:
    """``LocalizeNet`` with every parameter trainable (Lite0: ImageNet weights, fc from the matching rows)."""
    if backbone == "tiny":
        model = build_tiny((size, size), len(wnids), seed=seed)
    else:
        index = {lab["id"]: int(lab["index"]) for lab in imagenet_labels()}
        model = build_lite0((size, size), wnids, index)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def param_groups(model: LocalizeNet, lr: float, trunk_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Heads (fc, box head) at ``lr``, trunk + tail at ``trunk_lr``; no weight decay on biases and norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        head = name.startswith(("fc.", "box_head."))
        groups.setdefault((head, p.ndim > 1), []).append(p)
    return [
        {"params": ps, "lr": lr if head else trunk_lr, "weight_decay": weight_decay if decay else 0.0}
        for (head, decay), ps in sorted(groups.items())
    ]


def set_train_mode(model: LocalizeNet, bn: str, momentum: float) -> None:
    """Dropout on; BatchNorm either normalizes with batch statistics (``train``) or keeps its running ones."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn == "frozen":
                m.eval()
            else:
                m.momentum = momentum
