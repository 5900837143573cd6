"""The ``localize`` network's initial weights, its ONNX export (``GapClassifier`` + box head) and its sidecar."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.common.efficientnet_lite import LITE0_WEIGHTS
from export.common.onnx_export import GapClassifier, export_onnx, verify_onnx, verify_wrapper
from export.common.sidecar import imagenet_labels, provenance, stretch_input
from export.localize.data import MEAN, STD, Dataset, LabelInfo, load_image, pre_resize_of
from export.localize.model import LocalizeNet, build_lite0, build_tiny

DEFAULT_OUT = Path("models") / "efficientnet_lite0_tiny_localize.onnx"


def imagenet_ids(labels: list[LabelInfo]) -> bool:
    """Whether every class is an ImageNet-1k WordNet id (then the pretrained head seeds the dense layer)."""
    known = {lab["id"] for lab in imagenet_labels()}
    return all(lab.id in known for lab in labels)


def head_baseline_key(weights: str, labels: list[LabelInfo]) -> str:
    """The baselines' name for the untrained head: restricted pretrained rows, or a plain initial head."""
    return "pretrained_head_restricted" if weights == LITE0_WEIGHTS and imagenet_ids(labels) else "initial_head"


def build_model(args: argparse.Namespace, labels: list[LabelInfo]) -> tuple[LocalizeNet, str]:
    """The network and a description of its initial weights."""
    size = (args.size, args.size)
    if args.backbone == "tiny":
        return build_tiny(size, len(labels), seed=args.seed), "random tiny CNN (tests / smoke runs)"
    index = {lab["id"]: int(lab["index"]) for lab in imagenet_labels()}
    return build_lite0(size, [lab.id for lab in labels], index), LITE0_WEIGHTS


def export_model(
    model: LocalizeNet, out: Path, size: tuple[int, int], samples: torch.Tensor
) -> tuple[GapClassifier, dict[str, float]]:
    """``GapClassifier`` + box head -> ONNX, verified on ``samples``."""
    wrapper = GapClassifier(model.eval(), "tail", "fc", heads={"box": model.box_head}).eval()
    wrap_err = verify_wrapper(wrapper, samples)
    export_onnx(wrapper, wrapper.output_names, size, out)
    report = verify_onnx(wrapper, wrapper.output_names, out, samples)
    report["max_abs_diff_wrapper_vs_model"] = wrap_err
    return wrapper, report


def sample_batch(ds: Dataset, size: tuple[int, int], pre: tuple[int, int] | None, n: int = 4) -> torch.Tensor:
    """A few real validation images for export verification."""
    pick = ds.val[:n] if ds.val else ds.train[:n]
    return torch.from_numpy(np.stack([load_image(s.path, size, pre) for s in pick]))


def sidecar_meta(
    args: argparse.Namespace,
    ds: Dataset,
    weights: str,
    *,
    metrics: dict[str, Any],
    report: dict[str, float],
    wrapper: GapClassifier,
) -> dict[str, Any]:
    """Everything the service needs, plus provenance and the measured metrics."""
    pre = pre_resize_of(args)
    return {
        "name": args.name or args.out.stem,
        "task": "localize",
        "box_format": "rchw_norm",
        "input": stretch_input(args.size, pre),
        "normalization": {"scale": 1.0 / 255.0, "mean": list(MEAN), "std": list(STD)},
        "outputs": {n: n for n in wrapper.output_names},
        "labels": [{"index": i, "id": lab.id, "name": lab.name} for i, lab in enumerate(ds.labels)],
        "provenance": provenance(weights, ds.source, seed=args.seed),
        "metrics": metrics,
        "verification": report,
    }
