"""Pose validation exactly as the service runs a model (crop the box, stretch, normalize), and ORT latency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common.onnx_run import onnx_predict, ort_session
from export.pose.data import (
    JOINT_NAMES,
    LSP_TOTAL,
    LSP_TRAIN_IMAGES,
    IntBox,
    PoseSample,
    denormalize_from_box,
    lsp_samples,
    service_crop,
    to_tensor_array,
)
from export.pose.metrics import pck, pcp


def val_inputs(samples: list[PoseSample], size: int) -> tuple[np.ndarray, list[IntBox], np.ndarray, np.ndarray]:
    """The service's preprocessing of each validation image's box: inputs, int boxes, gt joints, masks."""
    from PIL import Image

    xs, boxes = [], []
    for s in samples:
        with Image.open(s.path) as im:
            crop, ibox = service_crop(im, s.box, size)
        xs.append(to_tensor_array(crop))
        boxes.append(ibox)
    gt = np.stack([s.joints for s in samples])
    mask = np.stack([s.annotated for s in samples])
    return np.stack(xs), boxes, gt, mask


def to_pixels(norm: np.ndarray, boxes: list[IntBox]) -> np.ndarray:
    """(N, 28) normalized predictions -> (N, 14, 2) image pixels (continuous coordinates)."""
    uv = norm.reshape(len(boxes), -1, 2)
    return np.stack([denormalize_from_box(uv[i], boxes[i]) for i in range(len(boxes))])


def summarize(pred_px: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """PCP per part + mean, PCK@0.2 (mean and per joint)."""
    k = pck(pred_px, gt, mask)
    return {
        "pcp": {key: round(v, 4) for key, v in pcp(pred_px, gt, mask).items()},
        "pck@0.2": round(k["mean"], 4),
        "pck@0.2_per_joint": dict(zip(JOINT_NAMES, (round(v, 4) for v in k["per_joint"]), strict=True)),
    }


def predict_torch(module: nn.Module, x: np.ndarray, batch: int = 50, device: str = "cpu") -> np.ndarray:
    """Run a module returning ``joints`` first on float32 inputs, in eval mode (float32 on any device)."""
    module.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(x[i : i + batch]).to(device))[0].float().cpu().numpy())
    return np.concatenate(outs)


def latency_ms(path: Path, size: int, threads: int = 2, runs: int = 50) -> dict[str, float]:
    """onnxruntime CPU latency at batch 1 (median and p90 over ``runs`` after 5 warm-up runs)."""
    sess = ort_session(path, threads)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"image": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(float(np.median(times)), 2), "p90_ms": round(float(np.percentile(times, 90)), 2)}


def evaluate_onnx(path: Path, data: Path, size: int) -> dict[str, Any]:
    """Validation metrics of an exported model on LSP images 801-1000 through the service's pipeline."""
    val = lsp_samples(data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    vx, vboxes, vgt, vmask = val_inputs(val, size)
    joints = onnx_predict(path, (vx[i : i + 1] for i in range(len(vx))), ["joints"], threads=2)[0]  # as the service
    res = summarize(to_pixels(joints, vboxes), vgt, vmask)
    return {"split": "lsp_train images 801-1000 (held out, whole image as the box)", "n": len(val), **res}
