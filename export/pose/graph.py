"""The pose ONNX graph (``joints``, ``joint_visibility``; optional flip test-time averaging) and its check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.common.onnx_export import ExportVerificationError, check_onnx
from export.common.onnx_run import ort_session
from export.pose.data import flip_permutation
from export.pose.model import PoseNet


class PoseExport(nn.Module):
    """ONNX graph: ``joints`` (N, 28) and ``joint_visibility`` (N, 14); optional flip test-time averaging."""

    output_names = ("joints", "joint_visibility")

    def __init__(self, net: PoseNet, flip_tta: bool) -> None:
        super().__init__()
        self.net = net
        self.flip_tta = flip_tta
        self.register_buffer("perm", torch.from_numpy(flip_permutation()), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.flip_tta:
            joints, vis = self.net(x)
            return joints, torch.sigmoid(vis)
        n = x.shape[0]
        joints, vis = self.net(torch.cat([x, torch.flip(x, dims=[3])], dim=0))
        j = joints.reshape(2 * n, -1, 2)
        jf = j[n:][:, self.perm]
        jf = torch.stack([1.0 - jf[..., 0], jf[..., 1]], dim=-1)
        out = ((j[:n] + jf) / 2).reshape(n, -1)
        v = (torch.sigmoid(vis[:n]) + torch.sigmoid(vis[n:][:, self.perm])) / 2
        return out, v


def verify_pose_onnx(module: nn.Module, path: Path, x: np.ndarray, atol: float = 1e-4) -> dict[str, float]:
    """ONNX checker + onnxruntime vs PyTorch on ``x``; raises ``ExportVerificationError`` on any mismatch."""
    check_onnx(path)
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    if names != list(PoseExport.output_names):
        raise ExportVerificationError(f"ONNX outputs {names}, expected {list(PoseExport.output_names)}")
    got = sess.run(names, {"image": x})
    module.eval()
    with torch.no_grad():
        ref = [t.numpy() for t in module(torch.from_numpy(x))]
    report: dict[str, float] = {}
    for name, g, r in zip(names, got, ref, strict=True):
        if g.shape != r.shape:
            raise ExportVerificationError(f"{name}: onnxruntime shape {g.shape} != torch {r.shape}")
        err = float(np.max(np.abs(g.astype(np.float64) - r)))
        report[f"max_abs_diff_{name}"] = err
        if not err <= atol:
            raise ExportVerificationError(f"{name}: onnxruntime differs from torch by {err:.3g} (> {atol})")
    return report
