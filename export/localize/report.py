"""Markdown tables from a localize sidecar: ``python -m export.localize.report models/<name>.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

METRICS = ("top1_accuracy", "mean_iou", "gt_known_loc_accuracy", "top1_loc_accuracy")


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def metrics_table(metrics: dict[str, Any]) -> str:
    """Val metrics of the model and of the baselines, one row each (percent; mean IoU as a fraction)."""
    rows = [("**this model**", metrics["val"])]
    names = {
        "whole_image_box": "(a) box = whole image (classes: this model)",
        "mean_train_box": "(b) box = mean training box (classes: this model)",
        "pretrained_head_restricted": "(c) pretrained ImageNet head restricted to the 200 classes, whole-image box",
        "initial_head": "(c) untrained head, whole-image box",
    }
    rows += [(label, metrics["baselines"][key]) for key, label in names.items() if key in metrics["baselines"]]
    out = ["| model | top-1 acc % | mean IoU | GT-known loc % | top-1 loc % |", "|---|---:|---:|---:|---:|"]
    for label, m in rows:
        out.append(
            f"| {label} | {_pct(m['top1_accuracy'])} | {m['mean_iou']:.4f} | "
            f"{_pct(m['gt_known_loc_accuracy'])} | {_pct(m['top1_loc_accuracy'])} |"
        )
    return "\n".join(out)


def sweep_table(metrics: dict[str, Any]) -> str:
    """The alpha sweep: mean +- std over the folds of each metric."""
    sweep = metrics["alpha_sweep"]
    out = [
        f"| alpha | top-1 loc % ({sweep['folds']}-fold mean ± std) | top-1 acc % | mean IoU | GT-known loc % |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in sweep["rows"]:
        mark = " **(chosen)**" if r["alpha"] == sweep["chosen_alpha"] else ""
        out.append(
            f"| {r['alpha']}{mark} | {_pct(r['top1_loc_accuracy_mean'])} ± {_pct(r['top1_loc_accuracy_std'])} | "
            f"{_pct(r['top1_accuracy_mean'])} ± {_pct(r['top1_accuracy_std'])} | "
            f"{r['mean_iou_mean']:.4f} ± {r['mean_iou_std']:.4f} | "
            f"{_pct(r['gt_known_loc_accuracy_mean'])} ± {_pct(r['gt_known_loc_accuracy_std'])} |"
        )
    return "\n".join(out)


def report(sidecar: dict[str, Any]) -> str:
    """All tables for docs/localize.md."""
    m = sidecar["metrics"]
    return "\n\n".join(
        [
            "### Validation metrics",
            metrics_table(m),
            "### Alpha sweep",
            sweep_table(m),
            "### Timing (s)",
            "```json\n" + json.dumps(m["timing_s"], indent=2) + "\n```",
            "### Train/serve gap probe",
            "```json\n" + json.dumps(m.get("train_serve_gap", {}), indent=2) + "\n```",
            "### End to end through onnxruntime",
            "```json\n" + json.dumps(m.get("onnx_end_to_end", {}), indent=2) + "\n```",
        ]
    )


if __name__ == "__main__":
    print(report(json.loads(Path(sys.argv[1]).read_text())))
