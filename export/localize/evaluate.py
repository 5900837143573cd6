"""Measurements of a ``localize`` model: baselines, onnxruntime end to end on raw files, PyTorch on raw files,
and the train/serve gap probe (sharp photos, upscaled val images, with and without pre-resize)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.common.onnx_run import onnx_predict, ort_session
from export.localize.data import LabelInfo, Sample, boxes_of, labels_of, load_image, pre_resize_of, preprocess
from export.localize.metrics import localization_metrics
from export.localize.model import BoxHead, LocalizeNet
from export.localize.train import Split, predict


def box_baselines(train: Split, val: Split, final_labels: np.ndarray) -> dict[str, Any]:
    """Val metrics of trivial boxes (whole image, mean training box), with the final model's classes."""
    n = len(val.labels)
    whole = np.tile(np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32), (n, 1))
    mean_box = train.boxes.mean(axis=0)
    return {
        "whole_image_box": localization_metrics(final_labels, whole, val.labels, val.boxes),
        "mean_train_box": localization_metrics(final_labels, np.tile(mean_box, (n, 1)), val.labels, val.boxes),
        "mean_train_box_rchw": [round(float(v), 4) for v in mean_box],
        "note": "box baselines use the final model's classes for top-1 loc; the pretrained head uses the whole-image box",
    }


def initial_head_baseline(model: LocalizeNet, val: Split) -> dict[str, float]:
    """Val metrics of the untrained classifier (pretrained ImageNet rows when the ids match) + whole-image box."""
    logits, _ = predict(model, val.feats)
    whole = np.tile(np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32), (len(val.labels), 1))
    return localization_metrics(logits.argmax(1), whole, val.labels, val.boxes)


def onnx_localize(
    path: Path, samples: list[Sample], size: tuple[int, int], pre: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) of the exported model on raw image files, preprocessed like the service."""
    batches = (
        np.stack([load_image(s.path, size, pre) for s in samples[start : start + 32]])
        for start in range(0, len(samples), 32)
    )
    logits, boxes = onnx_predict(path, batches, ["logits", "box"], threads=torch.get_num_threads())
    return logits, boxes


def onnx_end_to_end(
    path: Path, val: list[Sample], cached_pred: tuple[np.ndarray, np.ndarray], n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Re-measure the first ``n`` val images through onnxruntime from the raw files; compare with the cache path."""
    n = min(n, len(val))
    if n == 0:
        return {}
    logits, boxes = onnx_localize(path, val[:n], (args.size, args.size), pre_resize_of(args))
    metrics = localization_metrics(logits.argmax(1), boxes, labels_of(val[:n]), boxes_of(val[:n]))
    cache_logits, cache_boxes = cached_pred
    return {
        "n_images": n,
        "metrics": metrics,
        "label_agreement_with_cached_path": float((logits.argmax(1) == cache_logits[:n].argmax(1)).mean()),
        "max_abs_box_diff_vs_cached_path": float(np.abs(boxes - cache_boxes[:n]).max()),
    }


def _sharp_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos whose subject is a Tiny ImageNet class (empty without scikit-image)."""
    try:
        import skimage.data as skd
    except ImportError:
        return {}
    return {name: np.asarray(getattr(skd, name)()) for name in ("chelsea", "coffee")}


def gap_probe(path: Path, labels: list[LabelInfo], args: argparse.Namespace, val: list[Sample]) -> dict[str, Any]:
    """Train/serve gap: sharp photos (scikit-image) and upscaled val images, with and without pre-resize."""
    from PIL import Image

    sess = ort_session(path)
    size = (args.size, args.size)
    pres: dict[str, tuple[int, int] | None] = {"pre_resize_64": (64, 64), "no_pre_resize": None}

    def run(img: Image.Image, pre: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        lg, bx = sess.run(["logits", "box"], {"image": preprocess(img, size, pre)[None]})
        return lg[0], bx[0]

    out: dict[str, Any] = {"photos": {}}
    for name, pixels in _sharp_photos().items():
        img = Image.fromarray(pixels)
        row: dict[str, Any] = {"size_hw": [img.height, img.width]}
        for key, pre in pres.items():
            lg, bx = run(img, pre)
            p = np.exp(lg - lg.max())
            p /= p.sum()
            top = np.argsort(-p)[:3]
            row[key] = {
                "top3": [[labels[i].name, round(float(p[i]), 3)] for i in top],
                "box_rchw": [round(float(v), 3) for v in bx],
            }
        out["photos"][name] = row
    n = min(args.gap_images, len(val))
    for scale in (256,):
        res: dict[str, Any] = {}
        for key, pre in pres.items():
            lgs, bxs = [], []
            for s in val[:n]:
                with Image.open(s.path) as im:
                    big = im.convert("RGB").resize((scale, scale), Image.Resampling.BICUBIC)
                lg, bx = run(big, pre)
                lgs.append(lg)
                bxs.append(bx)
            res[key] = localization_metrics(np.argmax(lgs, 1), np.stack(bxs), labels_of(val[:n]), boxes_of(val[:n]))
        out[f"val_first{n}_upscaled_bicubic_to_{scale}"] = res
    return out


def torch_predict(
    model: LocalizeNet, samples: list[Sample], size: tuple[int, int], pre: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) of the PyTorch model on raw image files, preprocessed like the service (float32, eval)."""
    logits, boxes = [], []
    with torch.inference_mode():
        for start in range(0, len(samples), 32):
            x = torch.from_numpy(np.stack([load_image(s.path, size, pre) for s in samples[start : start + 32]]))
            lg, corners = model.eval().heads(model.trunk(x))
            logits.append(lg.numpy())
            boxes.append(BoxHead.to_rchw(corners).numpy())
    return np.concatenate(logits), np.concatenate(boxes)
