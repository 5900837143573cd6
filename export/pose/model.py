"""EfficientNet-Lite0 pose network: a small FPN over strides 32/16/8 and integral (soft-argmax) regression.

The backbone's stride-8, -16 and -32 volumes are merged top-down (1x1 lateral convs, nearest upsampling,
3x3 smoothing) into one stride-8 map; a 1x1 conv gives one heatmap logit map per joint, a spatial softmax
turns each into a distribution and its expected (x, y) over the cell centres is the joint, normalized to the
input (= the person box): ``x = sum_p softmax_p * (col_p + 0.5) / W``.  The network therefore outputs the
2k = 28 coordinates DeepPose regresses, while keeping spatial detail.  A visibility logit per joint comes
from the same map (max + mean pooled heatmap logits and pooled features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.common.efficientnet_lite import EfficientNetLite0

NUM_JOINTS = 14
# Last block index of each backbone stage we tap (EfficientNet-Lite0 block list, 16 blocks).
TAP_STRIDE8 = 4  # stage 2 output, 40 channels
TAP_STRIDE16 = 10  # stage 4 output, 112 channels
TAP_STRIDE32 = 15  # stage 6 output, 320 channels
TAP_CHANNELS = {TAP_STRIDE8: 40, TAP_STRIDE16: 112, TAP_STRIDE32: 320}


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def soft_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, H, W) logits -> (N, K, 2) expected (x, y) in [0, 1] over cell centres, and the probabilities."""
    n, k, h, w = logits.shape
    prob = torch.softmax(logits.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = (torch.arange(w, dtype=logits.dtype, device=logits.device) + 0.5) / w
    ys = (torch.arange(h, dtype=logits.dtype, device=logits.device) + 0.5) / h
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), prob


class PoseNet(nn.Module):
    """Backbone (blocks ``< frozen_blocks`` run without gradients) + FPN + soft-argmax head.

    ``forward`` returns ``(joints (N, 28), visibility logits (N, 14))``; wrap with ``PoseExport`` for ONNX.
    """

    def __init__(self, backbone: EfficientNetLite0, width: int = 64, frozen_blocks: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen_blocks = frozen_blocks
        self.lat32 = _conv_bn_relu(TAP_CHANNELS[TAP_STRIDE32], width, 1)
        self.lat16 = _conv_bn_relu(TAP_CHANNELS[TAP_STRIDE16], width, 1)
        self.lat8 = _conv_bn_relu(TAP_CHANNELS[TAP_STRIDE8], width, 1)
        self.smooth16 = _conv_bn_relu(width, width, 3)
        self.smooth8 = _conv_bn_relu(width, width, 3)
        self.heatmap = nn.Conv2d(width, NUM_JOINTS, 1)
        self.visibility = nn.Linear(2 * NUM_JOINTS + width, NUM_JOINTS)
        for p in self.frozen_parameters():
            p.requires_grad_(False)

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Stem and the first ``frozen_blocks`` blocks: never trained."""
        params = [*self.backbone._conv_stem.parameters(), *self.backbone._bn0.parameters()]
        for block in self.backbone._blocks[: self.frozen_blocks]:
            params.extend(block.parameters())
        return params

    def train(self, mode: bool = True) -> PoseNet:
        """Backbone BatchNorm statistics stay frozen (ImageNet); the new head's BN trains."""
        super().train(mode)
        self.backbone.eval()
        return self

    def taps(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Backbone volumes at strides 8, 16, 32."""
        bb = self.backbone
        out: dict[int, torch.Tensor] = {}
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen_blocks == 0):
            x = bb.stem(x)
            for i in range(self.frozen_blocks):
                x = bb._blocks[i](x)
                if i in TAP_CHANNELS:
                    out[i] = x
        for i in range(self.frozen_blocks, len(bb._blocks)):
            x = bb._blocks[i](x)
            if i in TAP_CHANNELS:
                out[i] = x
        return out

    def heatmap_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 14, H/8, W/8) joint logits and the fused stride-8 feature map."""
        t = self.taps(x)
        p = self.lat32(t[TAP_STRIDE32])
        p = self.smooth16(self.lat16(t[TAP_STRIDE16]) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.smooth8(self.lat8(t[TAP_STRIDE8]) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return self.heatmap(p), p

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feat = self.heatmap_logits(x)
        xy, _ = soft_argmax(logits)
        pooled = torch.cat([logits.amax(dim=(2, 3)), logits.mean(dim=(2, 3)), feat.mean(dim=(2, 3))], dim=1)
        return xy.reshape(xy.shape[0], -1), self.visibility(pooled)
