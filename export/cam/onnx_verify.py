"""Check a rewritten CAM graph against the original before it is written: the ONNX checker, the logits on random
images and on a real photo (fed as the service feeds them: stretched, scaled, normalized, NCHW), the pooled
vector against the mean of the features, and the CAM identity ``mean_rc(W . V) + b = logits``."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from export.cam.onnx_graph import NHWC, run_model
from export.cam.onnx_rewrite import CamGraph
from export.cam.onnx_tail import Tail

LOGITS_RTOL = 1e-4  # the same graph computes them: only float reordering may differ
IDENTITY_RTOL = 1e-3  # the service's load-time check


class VerificationError(RuntimeError):
    """The CAM graph does not reproduce the original's logits, or breaks the CAM identity."""


def photo(height: int, width: int) -> tuple[np.ndarray, str]:
    """A real photo (scikit-image's ``chelsea``, a cat) stretched to ``height`` × ``width`` as uint8 RGB, and its
    name; a smooth synthetic image when scikit-image is not installed."""
    from PIL import Image

    try:
        import skimage.data as skd

        img, name = np.asarray(getattr(skd, "chelsea")()), "skimage.data.chelsea"  # noqa: B009 (untyped)
    except ImportError:
        yy, xx = np.mgrid[0:300, 0:451]
        img = np.stack([xx * 255 // 450, yy * 255 // 299, (xx + yy) * 255 // 750], axis=-1).astype(np.uint8)
        name = "synthetic gradient (scikit-image not installed)"
    resized = Image.fromarray(img).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8), f"{name}, stretched to {height}x{width}"


def normalize(pixels: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """``(pixel * scale - mean) / std`` of an (H, W, 3) image, as the (1, 3, H, W) float32 batch the service feeds."""
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    x = (pixels.astype(np.float32) * np.float32(float(norm["scale"])) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def sample_inputs(
    height: int, width: int, norm: dict[str, Any], n_random: int = 4, seed: int = 0
) -> tuple[dict[str, np.ndarray], str]:
    """``random_<i>`` uniform-noise images and ``photo``, normalized, NCHW, batch of one each; and what they are."""
    rng = np.random.default_rng(seed)
    out = {
        f"random_{i}": normalize(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), norm)
        for i in range(n_random)
    }
    pixels, name = photo(height, width)
    out["photo"] = normalize(pixels, norm)
    return out, f"{n_random} uniform-noise images (seed {seed}) and {name}"


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _identity_error(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, logits: np.ndarray) -> float:
    # export.common.onnx_export.cam_identity_error computes the same, but that module imports torch at load
    maps = np.einsum("yk,nkrc->nyrc", weight.astype(np.float64), features.astype(np.float64))
    return _max_abs(maps.mean(axis=(2, 3)) + bias.astype(np.float64), logits)


def verify_cam_graph(
    original: onnx.ModelProto, input_layout: str, tail: Tail, cam: CamGraph, inputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Compare ``cam`` with ``original`` on ``inputs``; the measured errors, or ``VerificationError`` saying what
    was found (which nodes) when a check fails."""
    where = f"(GAP {tail.describe()})"
    try:
        onnx.checker.check_model(cam.model, full_check=True)
    except Exception as exc:
        raise VerificationError(f"the ONNX checker rejects the CAM graph {where}: {exc}") from exc
    assert tail.logits is not None
    names = [cam.outputs[c] for c in ("features", "pooled", "logits", "cam_weight", "cam_bias")]
    ref_names = [tail.logits] + ([tail.softmax.output[0]] if tail.softmax is not None else [])
    feeds = list(inputs.values())
    orig_feeds = [x.transpose(0, 2, 3, 1).copy() if input_layout == NHWC else x for x in feeds]
    refs = run_model(original, orig_feeds, ref_names)
    gots = run_model(cam.model, feeds, names)

    report: dict[str, Any] = {}
    worst = {"logits": 0.0, "identity": 0.0, "pooled": 0.0, "probabilities": 0.0}
    for key, ref, got in zip(inputs, refs, gots, strict=True):
        feats, pooled, logits, weight, bias = (got[n] for n in names)
        want = ref[tail.logits].reshape(logits.shape[0], -1)
        if feats.ndim != 4 or weight.shape != (logits.shape[1], feats.shape[1]) or bias.shape != (logits.shape[1],):
            raise VerificationError(
                f"shapes do not fit {where}: features {feats.shape}, cam_weight {weight.shape}, cam_bias "
                f"{bias.shape}, logits {logits.shape} (want features (N, K, R, C), W (classes, K), b (classes,))"
            )
        scale = max(1.0, float(np.max(np.abs(want))))
        err = _max_abs(logits, want) if logits.shape == want.shape else float("inf")
        report[f"max_abs_diff_logits_{key}"] = err
        if err > LOGITS_RTOL * scale:
            raise VerificationError(
                f"logits of the CAM graph differ from the original's '{tail.logits}' by {err:.3g} on {key} "
                f"(shapes {logits.shape} vs {want.shape}) {where}"
            )
        ident = _identity_error(feats, weight, bias, logits)
        if ident > IDENTITY_RTOL * scale:
            raise VerificationError(
                f"CAM identity mean(W.V) + b = logits fails by {ident:.3g} on {key} {where}: the dense layer "
                f"found ({len(tail.linear.nodes) if tail.linear else 0} node(s)) does not give the logits"
            )
        pooled_err = _max_abs(pooled, feats.mean(axis=(2, 3)).reshape(pooled.shape))
        if pooled_err > LOGITS_RTOL * max(1.0, float(np.max(np.abs(pooled)))):
            raise VerificationError(f"pooled is not the spatial mean of features (by {pooled_err:.3g}) {where}")
        worst["logits"] = max(worst["logits"], err)
        worst["identity"] = max(worst["identity"], ident)
        worst["pooled"] = max(worst["pooled"], pooled_err)
        if tail.softmax is not None and tail.softmax.op_type == "Softmax":
            z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
            probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            ref_probs = ref[tail.softmax.output[0]].reshape(probs.shape)
            worst["probabilities"] = max(worst["probabilities"], _max_abs(probs, ref_probs))
    report["max_abs_diff_logits"] = worst["logits"]
    report["cam_identity_max_abs"] = worst["identity"]
    report["max_abs_diff_pooled_vs_mean_features"] = worst["pooled"]
    if tail.softmax is not None and tail.softmax.op_type == "Softmax":
        report["max_abs_diff_softmax_vs_original_output"] = worst["probabilities"]
    report["inputs"] = len(feeds)
    return report
