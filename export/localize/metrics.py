"""Localization metrics, stratified folds and the alpha sweep's summary (shared by ``localize`` and fine-tuning)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from export.common.boxes import box_iou

SWEEP_METRIC = "top1_loc_accuracy"


def localization_metrics(
    pred_label: np.ndarray, pred_box: np.ndarray, labels: np.ndarray, boxes: np.ndarray
) -> dict[str, float]:
    """Top-1 accuracy, mean IoU, GT-known loc. (IoU >= 0.5) and top-1 loc. (class right and IoU >= 0.5)."""
    iou = box_iou(pred_box, boxes)
    right = pred_label == labels
    return {
        "top1_accuracy": float(right.mean()),
        "mean_iou": float(iou.mean()),
        "gt_known_loc_accuracy": float((iou >= 0.5).mean()),
        "top1_loc_accuracy": float((right & (iou >= 0.5)).mean()),
    }


def fmt_metrics(m: Mapping[str, float]) -> str:
    """``name value`` pairs with four decimals, for log lines."""
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint index sets, each class spread evenly over them."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in folds]


def fold_summary(alpha: float, per_fold: Sequence[Mapping[str, float]], metric: str = SWEEP_METRIC) -> dict[str, Any]:
    """One sweep row: ``alpha``, the folds' ``metric`` and mean +- std (ddof 1) of every metric."""
    row: dict[str, Any] = {"alpha": float(alpha), "folds": [p[metric] for p in per_fold]}
    for name in per_fold[0]:
        vals = np.asarray([p[name] for p in per_fold])
        row[f"{name}_mean"] = float(vals.mean())
        row[f"{name}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return row


def sweep_rows(alphas: Sequence[float], results: Mapping[float, Sequence[Mapping[str, float]]]) -> list[dict[str, Any]]:
    """Per alpha, ``fold_summary`` of its held-out folds (``localize.report``'s format).

    Only folds that every alpha completed count, so a sweep cut short stays a paired comparison.
    """
    k = min(len(results.get(a, [])) for a in alphas) if alphas else 0
    if k == 0:
        return []
    return [fold_summary(a, results[a][:k]) for a in alphas]


def chosen_alpha(rows: Sequence[Mapping[str, Any]], default: float) -> float:
    """The alpha with the best mean top-1 localization accuracy over the folds (the first on ties)."""
    if not rows:
        return default
    return float(max(rows, key=lambda r: float(r[f"{SWEEP_METRIC}_mean"]))["alpha"])
