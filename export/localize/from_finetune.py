"""``python -m export localize --from-finetune DIR``: export a ``localize-finetune`` result and measure it."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from export.common.efficientnet_lite import LITE0_WEIGHTS
from export.common.logs import get_logger
from export.common.sidecar import provenance, write_sidecar
from export.localize.data import boxes_of, labels_of, load_dataset, pre_resize_of
from export.localize.evaluate import box_baselines, gap_probe, initial_head_baseline, onnx_localize, torch_predict
from export.localize.exporting import build_model, export_model, head_baseline_key, sample_batch, sidecar_meta
from export.localize.finetune.checkpoint import load_finetuned
from export.localize.metrics import fmt_metrics, localization_metrics
from export.localize.pipeline import cache_val
from export.localize.train import Split

log = get_logger(__name__)


def run_from_finetune(args: argparse.Namespace) -> None:
    """``--from-finetune DIR``: export a ``localize-finetune`` result and measure it on the raw validation files.

    No training here: the state dict, alpha sweep and training record come from ``DIR``.  Validation metrics are
    measured end to end (raw file -> service preprocessing -> onnxruntime on the exported file), on all val
    images or the first ``--val-limit``; PyTorch on the first ``--onnx-check`` of them must agree.
    """
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ft, model = load_finetuned(args.from_finetune)
    cfg = ft["config"]
    args.size, args.pre_resize, args.backbone = cfg["size"], cfg["pre_resize"] or [0, 0], cfg["backbone"]
    ds = load_dataset(args)
    if [lab.id for lab in ds.labels] != ft["classes"]["wnids"]:
        raise SystemExit(f"{args.from_finetune}: its classes differ from the dataset's ({ds.source})")
    if args.val_limit:
        ds.val = ds.val[: args.val_limit]
    size, pre = (args.size, args.size), pre_resize_of(args)
    log.info(
        f"fine-tuned model from {args.from_finetune} ({ft['device']}, alpha {ft['chosen_alpha']}); "
        f"val: {len(ds.val)} images"
    )

    t0 = time.time()
    wrapper, report = export_model(model, args.out, size, sample_batch(ds, size, pre))
    logits, boxes = onnx_localize(args.out, ds.val, size, pre)
    val_labels, val_boxes = labels_of(ds.val), boxes_of(ds.val)
    val_metrics = localization_metrics(logits.argmax(1), boxes, val_labels, val_boxes)
    t_val = time.time() - t0
    log.info(f"val (onnxruntime, raw files): {fmt_metrics(val_metrics)} ({t_val:.0f}s)")
    n = min(args.onnx_check, len(ds.val))
    t_logits, t_boxes = torch_predict(model, ds.val[:n], size, pre)
    agree = {
        "n_images": n,
        "metrics_torch": localization_metrics(t_logits.argmax(1), t_boxes, val_labels[:n], val_boxes[:n]),
        "label_agreement_torch_vs_onnxruntime": float((t_logits.argmax(1) == logits[:n].argmax(1)).mean()),
        "max_abs_box_diff_torch_vs_onnxruntime": float(np.abs(t_boxes - boxes[:n]).max()) if n else 0.0,
        "max_abs_logit_diff_torch_vs_onnxruntime": float(np.abs(t_logits - logits[:n]).max()) if n else 0.0,
    }
    log.info(f"torch vs onnxruntime on {n} val images: {agree}")

    empty = np.zeros((0,), dtype=np.float16)
    train = Split(empty, labels_of(ds.train), boxes_of(ds.train))
    val = Split(empty, val_labels, val_boxes)
    base: dict[str, Any] = box_baselines(train, val, logits.argmax(1))
    if args.initial_baseline:
        t0 = time.time()
        initial_model, weights0 = build_model(args, ds.labels)
        key = head_baseline_key(weights0, ds.labels)
        base[key] = initial_head_baseline(initial_model, cache_val(args, initial_model, ds))
        log.info(f"baseline, {key}: {fmt_metrics(base[key])} ({time.time() - t0:.0f}s)")
    gap = gap_probe(args.out, ds.labels, args, ds.val) if args.gap_images > 0 else {}

    on = "an NVIDIA H100" if "H100" in ft["device"] else ft["device"]
    weights = (
        f"{LITE0_WEIGHTS if cfg['backbone'] == 'lite0' else 'random tiny CNN'}, fine-tuned end to end on {on} "
        f"by `{ft['command']}`"
    )
    sweep = dict(ft["alpha_sweep"])
    metrics: dict[str, Any] = {
        "val": val_metrics,
        "val_n": len(ds.val),
        "val_measured_by": "onnxruntime on the exported file, raw val files through the service's preprocessing",
        "baselines": base,
        "alpha_sweep": sweep,
        "onnx_end_to_end": agree,
        "train_serve_gap": gap,
        "timing_s": {f"finetune_{k}": v for k, v in ft["timing_s"].items()} | {"export_and_val": round(t_val, 1)},
        "training": {
            **cfg,
            "device": ft["device"],
            "torch": ft["torch"],
            "final_epochs": ft["final_training"]["epochs"],
            "plan": ft["plan"],
            "resampling_check_vs_pillow": ft.get("resampling_check_vs_pillow"),
        },
    }
    extra = {
        "seed": cfg["seed"],
        "finetune": {
            "command": ft["command"],
            "device": ft["device"],
            "torch": ft["torch"],
            "env": ft.get("env", {}),
            "pack_sha256": ft["pack"]["sha256"],
            "seconds": ft["timing_s"]["total"],
        },
    }
    metrics["timing_s"]["total_here"] = round(time.time() - t_start, 1)
    meta = sidecar_meta(args, ds, weights, metrics=metrics, report=report, wrapper=wrapper)
    meta["provenance"] = provenance(weights, ds.source, **extra)
    side = write_sidecar(args.out, meta)
    print(json.dumps({"val": val_metrics, "baselines": base, "torch_vs_onnxruntime": agree}, indent=2))
    log.info(f"wrote {args.out} and {side} in {time.time() - t_start:.0f}s")
