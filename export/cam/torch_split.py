"""``python -m export cam --model pkg:factory --head-layer NAME``: a PyTorch classifier whose head after GAP is not
one ``nn.Linear`` (torchvision's MobileNetV3 ``classifier``: Linear -> Hardswish -> Dropout -> Linear), exported
split at the GAP input.

The model is checked to be ``head(GAP(feature_layer(x)))``, exported whole to ONNX (torch.onnx), then split as
``onnx-cam`` splits any ONNX classifier (:mod:`export.cam.onnx_split`: ``NAME.onnx`` with ``features``, ``pooled``,
``logits``; ``NAME.head.onnx`` with ``logits`` and the chain-rule ``gradient``); finally the ONNX features and
logits are compared with PyTorch's, and the head's gradient with ``torch.func.jacrev`` of the PyTorch head - an
exact reference, so the check is to float rounding (recorded in the sidecar's ``verification.torch``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.cam.onnx_cam import OnnxCamError, convert
from export.common.onnx_export import ExportVerificationError, export_onnx, get_submodule
from export.common.onnx_run import ort_session

TORCH_RTOL = 1e-4


def head_on_pooled(head: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """The head on pooled vectors (N, K): as they are, or as (N, K, 1, 1) when it starts with a 1×1 conv."""
    try:
        out: torch.Tensor = head(pooled)
    except RuntimeError:
        out = head(pooled[:, :, None, None])
    return out.reshape(pooled.shape[0], -1)


def _features(model: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    captured: list[torch.Tensor] = []
    handle = get_submodule(model, layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    if not captured or captured[-1].dim() != 4:
        raise ExportVerificationError(f"feature layer {layer!r} was not called, or does not output (N, K, R, C)")
    return captured[-1], logits


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def export_split_model(
    model: nn.Module,
    feature_layer: str,
    head_layer: str,
    out: Path,
    size: int,
    labels: list[dict[str, Any]],
    normalization: dict[str, Any],
    name: str,
    prov: dict[str, Any],
    samples: torch.Tensor,
) -> Path:
    """Check, export, split and verify; returns the sidecar path."""
    model = model.eval()
    head = get_submodule(model, head_layer)
    feats, logits = _features(model, feature_layer, samples)
    with torch.no_grad():
        again = head_on_pooled(head, feats.mean(dim=(2, 3)))
    scale = max(1.0, float(logits.abs().max()))
    if again.shape != logits.shape or float((again - logits).abs().max()) > TORCH_RTOL * scale:
        raise ExportVerificationError(
            f"the model's output is not {head_layer}(GAP({feature_layer})): shapes {tuple(again.shape)} vs "
            f"{tuple(logits.shape)}, or they differ"
        )
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "whole.onnx"
        export_onnx(_Logits(model), ["logits"], (size, size), whole)
        try:
            side, _ = convert(
                whole,
                out,
                name=name,
                label_list=labels,
                mean=list(normalization["mean"]),
                std=list(normalization["std"]),
                command=str(prov.get("command", "")),
                extra={
                    "weights": prov.get("weights"),
                    "data": prov.get("data"),
                    "exporter_torch": prov.get("exporter"),
                },
            )
        except OnnxCamError as exc:
            raise ExportVerificationError(str(exc)) from exc
    meta = json.loads(side.read_text())
    if "head" not in meta:
        raise ExportVerificationError(f"{head_layer} is one linear layer after GAP: export it with --dense-layer")
    meta["verification"]["torch"] = verify_against_torch(out, meta, head, feats, logits, samples)
    side.write_text(json.dumps(meta, indent=2) + "\n")
    return side


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def verify_against_torch(
    out: Path,
    meta: dict[str, Any],
    head: nn.Module,
    feats: torch.Tensor,
    logits: torch.Tensor,
    samples: torch.Tensor,
) -> dict[str, float]:
    """ONNX features and logits against PyTorch's, and the head file's gradient against ``torch.func.jacrev``."""
    got_feats, got_logits = ort_session(out).run(["features", "logits"], {"image": samples.numpy()})
    report = {
        "max_abs_diff_features": _max_abs(got_feats, feats.numpy()),
        "max_abs_diff_logits": _max_abs(got_logits, logits.numpy()),
    }
    spec = meta["head"]
    if spec.get("gradient"):
        pooled = feats.mean(dim=(2, 3))
        (grad,) = ort_session(out.parent / spec["file"]).run(
            [spec["gradient"]], {spec["input"]: pooled[:, :, None, None].numpy()}
        )
        ref = np.stack(
            [torch.func.jacrev(lambda p: head_on_pooled(head, p[None])[0])(p).detach().numpy() for p in pooled]
        )
        report["max_abs_diff_gradient_vs_jacrev"] = _max_abs(grad, ref)
        if report["max_abs_diff_gradient_vs_jacrev"] > TORCH_RTOL * max(1.0, float(np.abs(ref).max())):
            raise ExportVerificationError(
                f"head gradient differs from torch.func.jacrev by {report['max_abs_diff_gradient_vs_jacrev']:.3g}"
            )
    for key in ("features", "logits"):
        ref_value = (feats if key == "features" else logits).numpy()
        if report[f"max_abs_diff_{key}"] > 1e-3 * max(1.0, float(np.abs(ref_value).max())):
            raise ExportVerificationError(
                f"{key}: onnxruntime differs from torch by {report[f'max_abs_diff_{key}']:.3g}"
            )
    return report
