"""``python -m export localize``: the command line (training the heads, or exporting a fine-tuned model)."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.localize import pipeline
from export.localize.data import add_dataset_arguments
from export.localize.exporting import DEFAULT_OUT
from export.localize.from_finetune import run_from_finetune


def run(args: argparse.Namespace) -> None:
    """``--from-finetune DIR``: export that result; otherwise the whole pipeline (``export.localize.pipeline``)."""
    if args.from_finetune is not None:
        run_from_finetune(args)
    else:
        pipeline.run(args)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``python -m export localize``."""
    p = sub.add_parser(
        "localize",
        help="train classification + box heads on EfficientNet-Lite0 and export to ONNX (box output)",
        description=pipeline.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_arguments(p.add_argument_group("data"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--name", default=None, help="model name in the API (default: file stem)")
    p.add_argument("--backbone", choices=("lite0", "tiny"), default="lite0", help="tiny: random small CNN (tests)")
    p.add_argument("--size", type=int, default=160, help="square model input side (multiple of 32)")
    p.add_argument("--pre-resize", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="0 0: none")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6, help="epochs of the final training")
    p.add_argument("--cv-epochs", type=int, default=2, help="epochs of each cross-validation run")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3, help="heads' learning rate (AdamW, cosine)")
    p.add_argument("--tail-lr", type=float, default=5e-4, help="shared tail's learning rate")
    p.add_argument(
        "--fc-lr", type=float, default=None, help="classification head's rate (default: --lr; 0: frozen, as loaded)"
    )
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False, help="mirrored training copies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=Path("cache") / "localize")
    p.add_argument(
        "--onnx-check",
        type=int,
        default=500,
        help="val images re-measured through onnxruntime (with --from-finetune: through PyTorch)",
    )
    p.add_argument("--gap-images", type=int, default=200, help="val images for the pre-resize probe (0: skip)")
    ft = p.add_argument_group("fine-tuned model (python -m export localize-finetune)")
    ft.add_argument(
        "--from-finetune",
        type=Path,
        default=None,
        metavar="DIR",
        help="export + evaluate the state dict in DIR instead of training (size, pre-resize from DIR)",
    )
    ft.add_argument("--val-limit", type=int, default=0, help="with --from-finetune: first N val images only")
    ft.add_argument(
        "--initial-baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --from-finetune: baseline (c), the untrained head (cached trunk outputs)",
    )
    p.set_defaults(func=run)
