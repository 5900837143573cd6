"""Export any GAP -> dense classifier to the service's ONNX contract, and verify it.

Contract (read by ``app/`` through the sidecar JSON only):

* input ``image``: float32 (N, 3, H, W), dynamic N;
* outputs ``features`` (N, K, R', C') - the volume that enters global average pooling,
  ``pooled`` (N, K), ``logits`` (N, classes), plus the dense layer itself as constant outputs
  ``cam_weight`` (classes, K) and ``cam_bias`` (classes,) so the weights live in the same file
  as the graph (one artifact, no drift); optional extra heads (``box``, ``joints``, ...).

Verification fails loudly (``ExportVerificationError``): the ONNX checker, onnxruntime against
PyTorch on the given inputs, and the CAM identity ``mean_rc(W . V) + b == logits``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common.onnx_run import ort_session

BASE_OUTPUTS = ("features", "pooled", "logits", "cam_weight", "cam_bias")


class ExportVerificationError(RuntimeError):
    """An exported model does not match its PyTorch source or breaks the CAM identity."""


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """Resolve ``"layer4"`` or ``"backbone.head.conv"`` to the submodule, with a clear error."""
    try:
        return model.get_submodule(dotted)
    except AttributeError as exc:
        names = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"no submodule {dotted!r}; some names: {names[-12:]}") from exc


class GapClassifier(nn.Module):
    """Wrap a user's CNN so that it returns the contract's outputs.

    ``feature_layer`` names the module whose output is the last conv volume V (N, K, R', C');
    ``dense_layer`` names the ``nn.Linear`` applied to GAP(V).  The logits are recomputed as
    ``dense(mean_rc V)``; ``verify_wrapper`` checks they equal the model's own forward, which
    proves the named layers really form a GAP -> dense tail.
    ``heads`` maps extra output names to modules taking V (e.g. a box regressor).
    """

    def __init__(
        self,
        model: nn.Module,
        feature_layer: str,
        dense_layer: str,
        heads: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.feature_layer = feature_layer
        dense = get_submodule(model, dense_layer)
        if not isinstance(dense, nn.Linear):
            raise ValueError(f"dense layer {dense_layer!r} is {type(dense).__name__}, expected nn.Linear")
        self.dense = dense
        self._feature_module = get_submodule(model, feature_layer)
        self.heads = nn.ModuleDict(dict(heads or {}))
        self._captured: list[torch.Tensor] = []
        self._feature_module.register_forward_hook(self._capture)

    def _capture(self, _m: nn.Module, _inp: Any, out: Any) -> None:
        self._captured.append(out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self._captured.clear()
        self.model(x)
        if not self._captured:
            raise ValueError(f"feature layer {self.feature_layer!r} was not called in forward")
        v = self._captured[-1]
        self._captured.clear()
        if not isinstance(v, torch.Tensor) or v.dim() != 4:
            raise ValueError(f"feature layer {self.feature_layer!r} must output (N, K, R, C)")
        return v

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        v = self.features(x)
        pooled = v.mean(dim=(2, 3))
        logits = self.dense(pooled)
        w = self.dense.weight * 1.0
        b = self.dense.bias * 1.0 if self.dense.bias is not None else torch.zeros(w.shape[0])
        extras = tuple(head(v) for head in self.heads.values())
        return (v, pooled, logits, w, b, *extras)

    @property
    def output_names(self) -> list[str]:
        return [*BASE_OUTPUTS, *self.heads.keys()]


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def cam_identity_error(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, logits: np.ndarray) -> float:
    """Max |mean_rc(sum_k W[y,k] V[k,r,c]) + b[y] - logits[y]| over the batch and classes."""
    maps = np.einsum("yk,nkrc->nyrc", weight.astype(np.float64), features.astype(np.float64))
    scores = maps.mean(axis=(2, 3)) + bias.astype(np.float64)
    return _max_abs(scores, logits)


def verify_wrapper(wrapper: GapClassifier, x: torch.Tensor, atol: float = 1e-4) -> float:
    """Check that the wrapper's logits equal the wrapped model's own output; return the max error."""
    with torch.no_grad():
        own = wrapper.model(x)
        ours = wrapper(x)[2]
    if not isinstance(own, torch.Tensor) or own.shape != ours.shape:
        raise ExportVerificationError(
            "the model's forward does not end in the named dense layer applied to GAP(features): "
            f"model output {getattr(own, 'shape', type(own))}, GAP->dense gives {tuple(ours.shape)}"
        )
    err = float((own - ours).abs().max())
    if err > atol * max(1.0, float(own.abs().max())):
        raise ExportVerificationError(
            f"logits recomputed from GAP(features) differ from the model's own by {err:.3g}: "
            "the named feature/dense layers are not a GAP -> dense tail"
        )
    return err


def export_onnx(
    module: nn.Module,
    output_names: Sequence[str],
    input_hw: tuple[int, int],
    path: Path,
    opset: int = 17,
) -> None:
    """Export ``module`` (returning ``output_names`` in order) with a dynamic batch axis."""
    module.eval()
    dummy = torch.zeros(1, 3, *input_hw)
    dynamic_axes: dict[str, dict[int, str]] = {"image": {0: "batch"}}
    for name in output_names:
        if name not in ("cam_weight", "cam_bias"):
            dynamic_axes[name] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["image"],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    _name_outputs(path, list(output_names))


def _name_outputs(path: Path, output_names: list[str]) -> None:
    """Give constant-folded outputs (the dense weights) their contract names via Identity nodes."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    outputs = list(model.graph.output)
    if len(outputs) != len(output_names):
        raise ExportVerificationError(f"exported {len(outputs)} outputs, expected {output_names}")
    changed = False
    for out, want in zip(outputs, output_names, strict=True):
        if out.name != want:
            model.graph.node.append(helper.make_node("Identity", [out.name], [want], name=f"name_{want}"))
            out.name = want
            changed = True
    if changed:
        onnx.save(model, str(path))


def check_onnx(path: Path) -> None:
    """The ONNX checker (full check) on ``path``; ``ExportVerificationError`` when it rejects the file."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:
        raise ExportVerificationError(f"ONNX checker rejected {path}: {exc}") from exc


def verify_onnx(
    module: nn.Module,
    output_names: Sequence[str],
    path: Path,
    inputs: torch.Tensor,
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> dict[str, float]:
    """ONNX checker + onnxruntime vs PyTorch + CAM identity.  Returns the measured errors."""
    check_onnx(path)
    sess = ort_session(path)
    got = dict(zip(output_names, sess.run(list(output_names), {"image": inputs.numpy()}), strict=True))
    with torch.no_grad():
        ref = {n: t.numpy() for n, t in zip(output_names, module(inputs), strict=True)}

    report: dict[str, float] = {}
    for name in output_names:
        if got[name].shape != ref[name].shape:
            raise ExportVerificationError(f"{name}: onnxruntime shape {got[name].shape} != torch {ref[name].shape}")
        err = _max_abs(got[name], ref[name])
        scale = float(np.max(np.abs(ref[name]))) if ref[name].size else 0.0
        report[f"max_abs_diff_{name}"] = err
        if err > atol + rtol * scale:
            raise ExportVerificationError(f"{name}: onnxruntime differs from torch by {err:.3g} (scale {scale:.3g})")

    ident = cam_identity_error(got["features"], got["cam_weight"], got["cam_bias"], got["logits"])
    report["cam_identity_max_abs"] = ident
    if ident > atol + rtol * float(np.max(np.abs(got["logits"]))):
        raise ExportVerificationError(f"CAM identity mean_rc(W.V)+b = logits broken by {ident:.3g}")
    return report
