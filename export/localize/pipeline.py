"""``python -m export localize``: classification + localization (EfficientNet-Lite0, two heads) -> ONNX.

Pipeline (one command, seeded, resumable caches in ``--cache-dir``):

1. read Tiny ImageNet (``--data DIR``) or a CSV/JSONL ``path,label,x1,y1,x2,y2`` (``--data-csv``);
2. run the frozen trunk once per image (and its mirror) with the *service's* preprocessing
   (``pre_resize`` then stretch to ``--size``) and cache the float16 outputs;
3. baselines on the validation set (whole-image box, mean training box, pretrained head);
4. choose alpha of ``E = alpha * CE + (1 - alpha) * E_box`` by k-fold CV on the training set
   (metric: top-1 localization accuracy);
5. retrain the tail + heads on all training data with that alpha, evaluate on validation;
6. export through ``GapClassifier`` (outputs ``features, pooled, logits, cam_weight, cam_bias, box``),
   verify (checker, onnxruntime vs torch, CAM identity), re-measure end to end through
   onnxruntime on raw validation files, probe the train/serve gap, write the sidecar.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np
import torch

from export.common.logs import get_logger
from export.common.sidecar import write_sidecar
from export.localize.cache import cached_split
from export.localize.data import Dataset, Sample, boxes_of, labels_of, load_dataset, pre_resize_of
from export.localize.evaluate import box_baselines, gap_probe, initial_head_baseline, onnx_end_to_end
from export.localize.exporting import build_model, export_model, head_baseline_key, sample_batch, sidecar_meta
from export.localize.metrics import chosen_alpha, fmt_metrics
from export.localize.model import LocalizeNet
from export.localize.train import Split, TrainConfig, evaluate, predict, sweep_alpha, train_heads

log = get_logger(__name__)


def _cached(args: argparse.Namespace, model: LocalizeNet, samples: list[Sample], split: str, flip: bool) -> np.ndarray:
    """Trunk outputs of ``samples``, computed once and cached in ``--cache-dir``."""
    size, pre = (args.size, args.size), pre_resize_of(args)
    tag = f"{args.backbone}-s{args.seed}-{args.size}" if args.backbone == "tiny" else f"lite0-{args.size}"
    return cached_split(tag, model.trunk, samples, size, pre, cache_dir=args.cache_dir, split=split, flip=flip)


def cache_train(args: argparse.Namespace, model: LocalizeNet, ds: Dataset) -> Split:
    """Training split (+ mirrored copies with ``--flip``)."""
    train = Split(_cached(args, model, ds.train, "train", False), labels_of(ds.train), boxes_of(ds.train))
    if args.flip:
        train.flipped = _cached(args, model, ds.train, "train", True)
    return train


def cache_val(args: argparse.Namespace, model: LocalizeNet, ds: Dataset) -> Split:
    """Validation split (only needed after the alpha sweep)."""
    return Split(_cached(args, model, ds.val, "val", False), labels_of(ds.val), boxes_of(ds.val))


def run(args: argparse.Namespace) -> None:
    """The whole pipeline (training the heads on cached trunk outputs); see the module docstring."""
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.size % 32 and args.backbone == "lite0":
        raise SystemExit("--size must be a multiple of 32")
    ds = load_dataset(args)
    log.info(f"data: {len(ds.train)} train, {len(ds.val)} val, {len(ds.labels)} classes ({ds.source})")
    model, weights = build_model(args, ds.labels)
    size, pre = (args.size, args.size), pre_resize_of(args)

    t0 = time.time()
    train = cache_train(args, model, ds)
    t_cache_train = time.time() - t0
    log.info(f"trunk outputs cached: train {train.feats.shape} ({t_cache_train:.0f}s)")
    model.box_head.init_to_box(train.boxes.mean(axis=0))
    cfg = TrainConfig(
        epochs=args.epochs, batch=args.batch, lr=args.lr, tail_lr=args.tail_lr, fc_lr=args.fc_lr, seed=args.seed
    )

    t0 = time.time()
    cv_cfg = dataclasses.replace(cfg, epochs=args.cv_epochs)
    sweep = sweep_alpha(model, train, args.alphas, args.folds, cv_cfg) if len(args.alphas) > 1 else []
    t_sweep = time.time() - t0
    best = chosen_alpha(sweep, args.alphas[0])
    log.info(f"chosen alpha = {best}")

    t0 = time.time()
    val = cache_val(args, model, ds)
    t_cache_val = time.time() - t0
    log.info(f"trunk outputs cached: val {val.feats.shape} ({t_cache_val:.0f}s)")
    initial = initial_head_baseline(model, val)
    log.info(f"baseline, initial head: {fmt_metrics(initial)}")

    t_final = train_heads(model, train, best, cfg, tag="final ")
    val_metrics = evaluate(model, val)
    log.info(f"val: {fmt_metrics(val_metrics)}")
    cached_pred = predict(model, val.feats)
    base: dict[str, Any] = box_baselines(train, val, cached_pred[0].argmax(1))
    base[head_baseline_key(weights, ds.labels)] = initial

    wrapper, report = export_model(model, args.out, size, sample_batch(ds, size, pre))
    e2e = onnx_end_to_end(args.out, ds.val, cached_pred, args.onnx_check, args)
    gap = gap_probe(args.out, ds.labels, args, ds.val) if args.gap_images > 0 else {}
    metrics: dict[str, Any] = {
        "val": val_metrics,
        "val_n": len(ds.val),
        "baselines": base,
        "alpha_sweep": {"metric": "top1_loc_accuracy", "folds": args.folds, "rows": sweep, "chosen_alpha": best},
        "onnx_end_to_end": e2e,
        "train_serve_gap": gap,
        "timing_s": {
            "trunk_cache_train": round(t_cache_train, 1),
            "trunk_cache_val": round(t_cache_val, 1),
            "alpha_sweep": round(t_sweep, 1),
            "final_training": round(t_final, 1),
            "total": round(time.time() - t_start, 1),
        },
        "training": {
            k: getattr(cfg, k)
            for k in ("epochs", "batch", "lr", "tail_lr", "fc_lr", "weight_decay", "label_smoothing", "seed")
        }
        | {
            "cv_epochs": args.cv_epochs,
            "bf16_autocast": cfg.bf16,
            "flip_augmentation": bool(args.flip),
            "threads": args.threads,
            "size": args.size,
        },
    }
    side = write_sidecar(args.out, sidecar_meta(args, ds, weights, metrics=metrics, report=report, wrapper=wrapper))
    print(json.dumps({"val": val_metrics, "baselines": base, "onnx_end_to_end": e2e}, indent=2))
    log.info(f"wrote {args.out} and {side} in {time.time() - t_start:.0f}s")
