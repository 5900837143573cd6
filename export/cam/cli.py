"""``python -m export cam``: export a GAP classifier (default: EfficientNet-Lite0 ImageNet; or Lite1) for /cam."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.cam.model import LiteClassifier, load_user_model, sample_images
from export.common.efficientnet_lite import LITE_VARIANTS, load_pretrained
from export.common.logs import get_logger
from export.common.onnx_export import GapClassifier, export_onnx, verify_onnx, verify_wrapper
from export.common.sidecar import imagenet_labels, provenance, stretch_input, write_sidecar

DEFAULT_NAME = "efficientnet_{backbone}_imagenet"  # lite0: the bundled model
log = get_logger(__name__)


def export_cam_model(
    model: nn.Module,
    feature_layer: str,
    dense_layer: str,
    out: Path,
    size: int,
    labels: list[dict[str, Any]],
    normalization: dict[str, Any],
    name: str,
    prov: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    samples: torch.Tensor | None = None,
) -> Path:
    """Wrap, export, verify and write the sidecar; returns the sidecar path."""
    wrapper = GapClassifier(model.eval(), feature_layer, dense_layer).eval()
    x = samples if samples is not None else sample_images(size)
    wrap_err = verify_wrapper(wrapper, x)
    export_onnx(wrapper, wrapper.output_names, (size, size), out)
    report = verify_onnx(wrapper, wrapper.output_names, out, x)
    report["max_abs_diff_wrapper_vs_model"] = wrap_err
    n_classes = int(wrapper.dense.weight.shape[0])
    if len(labels) != n_classes:
        raise SystemExit(f"{len(labels)} labels for {n_classes} classes")
    meta: dict[str, Any] = {
        "name": name,
        "task": "cam",
        "input": stretch_input(size),
        "normalization": normalization,
        "outputs": {n: n for n in wrapper.output_names},
        "labels": labels,
        "provenance": prov,
        "metrics": metrics or {},
        "verification": report,
    }
    return write_sidecar(out, meta)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``python -m export cam``."""
    p = sub.add_parser(
        "cam",
        help="export a GAP -> dense classifier to ONNX (features, pooled, logits, cam_weight, cam_bias)",
        description="Export EfficientNet-Lite0 (ImageNet, default), -Lite1 or your own GAP classifier for /cam.",
    )
    p.add_argument(
        "--backbone",
        choices=sorted(LITE_VARIANTS),
        default="lite0",
        help="the pretrained EfficientNet-Lite to export when no --model is given (lite1: deeper, 240 px)",
    )
    p.add_argument("--out", type=Path, default=None, help="default: models/efficientnet_<backbone>_imagenet.onnx")
    p.add_argument("--name", default=None, help="model name in the API (default: file stem)")
    p.add_argument("--size", type=int, default=None, help="square input side (default: the backbone's, 224 / 240)")
    p.add_argument("--model", default=None, help="your own model: package.module:factory (returns nn.Module)")
    p.add_argument("--feature-layer", default="features", help="submodule whose output is the last conv volume")
    p.add_argument("--dense-layer", default="fc", help="the nn.Linear applied to GAP(features)")
    p.add_argument(
        "--head-layer",
        default=None,
        help="instead of --dense-layer: the submodule mapping GAP(features) to the logits when it is not one "
        "nn.Linear (e.g. MobileNetV3's classifier); the export is then split into NAME.onnx and NAME.head.onnx",
    )
    p.add_argument("--labels", type=Path, default=None, help="JSON list of {index,id,name} (default: ImageNet-1k)")
    p.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.add_argument("--std", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Export the chosen classifier, verify it and write its sidecar."""
    variant = LITE_VARIANTS[args.backbone]
    args.size = args.size or variant.size
    args.out = args.out or Path("models") / f"{DEFAULT_NAME.format(backbone=variant.name)}.onnx"
    if args.size < 32:
        raise SystemExit("--size must be at least 32")
    if args.model:
        model = load_user_model(args.model)
        weights = args.model
    else:
        model = LiteClassifier(load_pretrained(backbone=variant.name))
        weights = variant.weights
    labels = json.loads(args.labels.read_text()) if args.labels else imagenet_labels()
    norm = {"scale": 1.0 / 255.0, "mean": list(args.mean), "std": list(args.std)}
    log.info(f"exporting {weights} at {args.size}x{args.size} -> {args.out}")
    prov = provenance(weights, "ImageNet-1k (pretrained, no training here)")
    if args.head_layer:
        from export.cam.torch_split import export_split_model

        split = export_split_model(
            model,
            args.feature_layer,
            args.head_layer,
            args.out,
            args.size,
            labels,
            norm,
            args.name or args.out.stem,
            prov,
            sample_images(args.size),
        )
        print(json.dumps(json.loads(split.read_text())["verification"], indent=2))
        print(f"wrote {args.out}, its head file and {split}")
        return
    side = export_cam_model(
        model,
        args.feature_layer,
        args.dense_layer,
        args.out,
        args.size,
        labels,
        norm,
        args.name or args.out.stem,
        prov,
    )
    print(json.dumps(json.loads(side.read_text())["verification"], indent=2))
    print(f"wrote {args.out} and {side}")
