"""The classification + localization network: frozen trunk -> shared trainable tail -> two heads.

``image -> trunk -> tail = V (N, K, R, C) -> { GAP -> fc -> logits ;  box_head(V) -> (r, c, h, w) }``

* ``trunk`` is frozen, so its output can be cached once per image (``export.localize.cache``);
* ``tail`` is trained by *both* losses: that shared part is what makes the weight
  ``alpha`` of ``E = alpha * E_cls + (1 - alpha) * E_box`` a real trade-off;
* the classification head is GAP -> dense on V, so ``/cam`` works on this model too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.common.efficientnet_lite import EfficientNetLite0, load_pretrained


class BoxHead(nn.Module):
    """V (N, K, R, C) -> boxes (N, 4) ``(r, c, h, w)`` normalized, always inside the image.

    A 1x1 reduction keeps the spatial layout (pooling would lose where things are), then an MLP
    regresses the corners ``(y1, x1, y2, x2)`` as offsets from a base box (the mean training box).
    Training sees the raw corners (``corners``), so the loss keeps a gradient even when a corner is
    outside the image (a sigmoid would saturate on the many boxes that touch the border); the
    output clips them to ``[0, 1]`` and orders them.
    """

    base: torch.Tensor

    def __init__(self, channels: int, grid: tuple[int, int], reduce: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduce, 1)
        self.fc1 = nn.Linear(reduce * grid[0] * grid[1], hidden)
        self.fc2 = nn.Linear(hidden, 4)
        self.drop = nn.Dropout(0.2)
        self.register_buffer("base", torch.tensor([0.0, 0.0, 1.0, 1.0]))

    def corners(self, v: torch.Tensor) -> torch.Tensor:
        """Unclipped (N, 4) ``(y1, x1, y2, x2)``."""
        z = F.relu(self.reduce(v)).flatten(1)
        out: torch.Tensor = self.fc2(self.drop(F.relu(self.fc1(z)))) + self.base
        return out

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.to_rchw(self.corners(v))

    @staticmethod
    def to_rchw(corners: torch.Tensor) -> torch.Tensor:
        """Corners -> ``(r, c, h, w)`` clipped to the image (``r + h <= 1``, ``c + w <= 1``)."""
        q = corners.clamp(0.0, 1.0)
        lo = torch.minimum(q[:, 0:2], q[:, 2:4])
        hi = torch.maximum(q[:, 0:2], q[:, 2:4])
        return torch.cat([lo, hi - lo], dim=1)

    def init_to_box(self, box: np.ndarray) -> None:
        """Start from a constant prediction equal to ``box`` (rchw, e.g. the mean training box)."""
        r, c, h, w = (float(v) for v in box)
        with torch.no_grad():
            self.base.copy_(torch.tensor([r, c, r + h, c + w]))
            self.fc2.weight.mul_(0.01)
            self.fc2.bias.zero_()


class LocalizeNet(nn.Module):
    """``forward(image) -> logits`` (GAP -> fc on ``tail``'s output); ``box_head`` reads the same V."""

    def __init__(self, trunk: nn.Module, tail: nn.Module, fc: nn.Linear, box_head: BoxHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.tail = tail
        self.fc = fc
        self.box_head = box_head
        self.drop = nn.Dropout(0.2)

    def heads(self, cached: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the trunk's (cached) output: (logits, unclipped box corners ``y1, x1, y2, x2``)."""
        v = self.tail(cached)
        logits = self.fc(self.drop(v.mean(dim=(2, 3))))
        return logits, self.box_head.corners(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.tail(self.trunk(x)).mean(dim=(2, 3)))
        return out


class LiteTrunk(nn.Module):
    """EfficientNet-Lite0 stem + MBConv blocks: image -> (N, 320, H/32, W/32).  Frozen, eval mode."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = net._blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


class LiteTail(nn.Module):
    """EfficientNet-Lite0 head conv: (N, 320, R, C) -> V (N, 1280, R, C), fine-tuned."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self._conv_head = net._conv_head
        self._bn1 = net._bn1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))


def build_lite0(
    size: tuple[int, int], class_ids: list[str], imagenet_index: dict[str, int] | None = None
) -> LocalizeNet:
    """EfficientNet-Lite0 (ImageNet weights) for ``len(class_ids)`` classes.

    When every class id is an ImageNet WordNet id (``imagenet_index``), the dense layer starts
    from the matching rows of the pretrained 1000-class layer; otherwise it starts at random.
    """
    net = load_pretrained()
    fc = nn.Linear(net.feature_channels, len(class_ids))
    if imagenet_index is not None and all(c in imagenet_index for c in class_ids):
        rows = torch.tensor([imagenet_index[c] for c in class_ids])
        with torch.no_grad():
            fc.weight.copy_(net._fc.weight[rows])
            fc.bias.copy_(net._fc.bias[rows])
    grid = (size[0] // 32, size[1] // 32)
    model = LocalizeNet(LiteTrunk(net), LiteTail(net), fc, BoxHead(net.feature_channels, grid))
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    return model.eval()


def build_tiny(size: tuple[int, int], n_classes: int, seed: int = 0) -> LocalizeNet:
    """A tiny random CNN with the same structure (stride 8), for tests and smoke runs."""
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
    tail = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
    grid = (size[0] // 8, size[1] // 8)
    model = LocalizeNet(trunk, tail, nn.Linear(32, n_classes), BoxHead(32, grid, reduce=8, hidden=32))
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    return model.eval()


def trunk_grid(model: LocalizeNet, size: tuple[int, int]) -> tuple[int, ...]:
    """Shape (K, R, C) of the trunk's output for one input of ``size``."""
    with torch.no_grad():
        return tuple(model.trunk(torch.zeros(1, 3, *size)).shape[1:])
