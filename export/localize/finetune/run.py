"""``python -m export localize-finetune``: decode the pack onto the device, plan, cross-validate alpha, train on
every image with it, save the state dict in shards + ``localize_finetune.json`` (log copied to ``--out-dir``)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from export.common.logs import get_logger, log_to_file
from export.localize.finetune.augment import AugmentConfig, sample_crops
from export.localize.finetune.checkpoint import FORMAT, META_NAME, save_shards
from export.localize.finetune.clock import Clock, OutOfTime, Progress, process_age
from export.localize.finetune.loop import Data, FinetuneConfig, train_run
from export.localize.finetune.pack import decode_all, load_pack
from export.localize.finetune.params import build_model
from export.localize.finetune.planner import Plan, measure_rates, plan_epochs, used
from export.localize.finetune.resample import resize_check
from export.localize.finetune.sweep import cross_validate
from export.localize.metrics import stratified_folds

IN_PROCESS = "(in-process)"
LOG_NAME = "localize_finetune.log"
log = get_logger(__name__)
PROCESS_AGE_AT_IMPORT = process_age()


def command_line() -> str:
    """This process's command as ``python -m export ...`` (or a note when called in-process, e.g. by tests)."""
    if "localize-finetune" not in sys.argv:
        return IN_PROCESS
    return "python -m export " + shlex.join(sys.argv[sys.argv.index("localize-finetune") :])


def finetune_config(args: argparse.Namespace, device: torch.device) -> FinetuneConfig:
    """The hyper-parameters of every run, from the command line (bf16 and channels-last on CUDA by default)."""
    return FinetuneConfig(
        size=args.size,
        batch=args.batch,
        eval_batch=args.eval_batch,
        lr=args.lr,
        trunk_lr=args.trunk_lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        bn=args.bn,
        bn_momentum=args.bn_momentum,
        bf16=args.bf16 if args.bf16 is not None else device.type == "cuda",
        channels_last=device.type == "cuda",
        seed=args.seed,
        augment=AugmentConfig(
            (args.crop_scale[0], args.crop_scale[1]),
            (args.crop_ratio[0], args.crop_ratio[1]),
            args.flip,
            args.min_box_keep,
            args.degrade,
            args.degrade_min,
        ),
    )


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """The whole ``localize-finetune`` command; returns the metadata it writes (log copied to --out-dir)."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with log_to_file(args.out_dir / LOG_NAME):
        return _run_finetune(args)


def _run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    # the budget counts from the process start when run as a command (Python + torch start-up included)
    startup = process_age() if command_line() != IN_PROCESS else 0.0
    clock = Clock(args.budget_s + args.grace_s if args.budget_s > 0 else None, startup)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = finetune_config(args, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    log.info(f"device {dev_name}, torch {torch.__version__}, bf16 {cfg.bf16}; process age {clock.elapsed():.1f}s")

    # ---- data: every JPEG decoded once, kept on the device as uint8
    t0 = time.time()
    pack = load_pack(args.pack)
    if args.limit and args.limit < len(pack):
        pick = np.sort(np.random.default_rng(args.seed).permutation(len(pack))[: args.limit])
        pack = pack.subset(pick)
    images = decode_all(pack)
    data = Data(torch.from_numpy(images).to(device), torch.from_numpy(pack.labels), torch.from_numpy(pack.boxes))
    t_decode = time.time() - t0
    n = len(pack)
    log.info(
        f"pack {args.pack}: {n} images {tuple(images.shape[1:])}, {len(pack.wnids)} classes, decoded {t_decode:.1f}s"
    )
    k = min(64, n)
    crops, _ = sample_crops(data.boxes[:k], torch.Generator().manual_seed(args.seed), cfg.augment)
    checks = [resize_check(images[:k], cfg.size, device), resize_check(images[:k], cfg.size, device, crops)]
    log.info(f"device resampling vs Pillow (8-bit levels): {checks}")

    # ---- model: pretrained Lite0, every parameter trainable, box head starting at the mean training box
    model = build_model(args.backbone, cfg.size, pack.wnids, args.seed).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    mean_box = pack.boxes.mean(axis=0)
    model.box_head.init_to_box(mean_box)
    init = {key: v.detach().clone() for key, v in model.state_dict().items()}

    # ---- plan: measure the speed, fit the epochs into the budget
    alphas = [float(a) for a in args.alphas]
    folds = stratified_folds(pack.labels, args.folds, args.seed) if len(alphas) > 1 else []
    runs = len(alphas) * len(folds)
    n_held = max((len(f) for f in folds), default=0)
    n_fit = used(n - min((len(f) for f in folds), default=0), cfg.batch)
    n_all = used(n, cfg.batch)
    progress = Progress(clock, log.info)
    plan = Plan(args.cv_epochs if runs else 0, args.epochs, float("nan"), "no time budget (--budget-s 0)")
    rates: dict[str, float] = {}
    t0 = time.time()
    if args.budget_s > 0:
        progress.rate_train, progress.rate_eval = measure_rates(model, data, cfg, args.bench_steps)
        rates = {"train_img_per_s": round(progress.rate_train, 1), "eval_img_per_s": round(progress.rate_eval, 1)}
        available = args.budget_s - clock.elapsed() - args.reserve_s
        plan = plan_epochs(
            rate_train=progress.rate_train,
            rate_eval=progress.rate_eval,
            n_fit=n_fit,
            n_held=n_held,
            n_all=n_all,
            runs=runs,
            cv_epochs=args.cv_epochs,
            final_epochs=args.epochs,
            min_final=args.min_epochs,
            available_s=args.plan_share * available,
        )
        log.info(
            f"measured {progress.rate_train:,.0f} train img/s, {progress.rate_eval:,.0f} eval img/s "
            f"({time.time() - t0:.1f}s); {available:.0f}s left -> plan: {runs} CV runs x {plan.cv_epochs} epochs, "
            f"final {plan.final_epochs} epochs ({plan.note}); projected total {clock.elapsed() + plan.projected_s:.0f}s "
            f"of budget {args.budget_s:.0f}s (hard stop {clock.hard_s:.0f}s)"
        )
    t_bench = time.time() - t0
    progress.plan_train = runs * plan.cv_epochs * n_fit + plan.final_epochs * n_all
    progress.plan_eval = runs * n_held if plan.cv_epochs else 0

    # ---- alpha by k-fold cross-validation; no CV run starts after the point where the final epochs still fit
    cv_deadline = args.budget_s - args.reserve_s - plan.final_epochs * n_all / max(progress.rate_train, 1e-6)
    sweep = cross_validate(
        model,
        data,
        init,
        folds=folds,
        alphas=alphas,
        epochs=plan.cv_epochs,
        cfg=cfg,
        seed=args.seed,
        default_alpha=args.default_alpha if len(alphas) > 1 else alphas[0],
        clock=clock,
        progress=progress,
        deadline_s=cv_deadline if args.budget_s > 0 else None,
    )

    # ---- final training on all images with the chosen alpha
    final_epochs = plan.final_epochs
    if args.budget_s > 0:
        left = args.plan_share * (args.budget_s - args.reserve_s - clock.elapsed())
        fit_epochs = int(left // (n_all / max(progress.rate_train, 1e-6)))
        if fit_epochs < final_epochs:
            log.info(f"final epochs {final_epochs} -> {max(1, fit_epochs)} to stay in the budget")
            final_epochs = max(1, fit_epochs)
    progress.plan_train = progress.done_train + final_epochs * n_all
    progress.plan_eval = progress.done_eval
    model.load_state_dict(init)
    t0 = time.time()
    final_note = ""
    final_stats: list[dict[str, float]] = []
    try:
        final_stats = train_run(
            model,
            data,
            np.arange(n),
            sweep.best,
            final_epochs,
            cfg,
            seed=args.seed,
            clock=clock,
            progress=progress,
            tag="final",
        )
    except OutOfTime as exc:
        final_note = f"final training stopped early: {exc}"
        log.info(final_note)
    model.eval()
    t_final = time.time() - t0

    # ---- save: float32 state dict in shards + metadata
    t0 = time.time()
    shards = save_shards(model.state_dict(), args.out_dir, int(args.shard_mib * 2**20))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "command": command_line(),
        "env": {key: os.environ[key] for key in ("EFFICIENTNET_LITE0_WEIGHTS",) if key in os.environ},
        "device": dev_name,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "pack": {"file": str(args.pack), "sha256": pack.sha256, "source": pack.source, "images": n},
        "classes": {"wnids": pack.wnids, "names": pack.names},
        "config": {
            "backbone": args.backbone,
            "size": cfg.size,
            "pre_resize": list(pack.pre_resize),
            "seed": args.seed,
            "epochs_requested": args.epochs,
            "cv_epochs_requested": args.cv_epochs,
            "epochs": final_epochs,
            "cv_epochs": plan.cv_epochs,
            "folds": args.folds,
            "alphas": alphas,
            "limit": args.limit,
            "mean_train_box_rchw": [round(float(v), 6) for v in mean_box],
            **{key: v for key, v in asdict(cfg).items() if key not in ("augment", "size", "seed")},
            "augment": asdict(cfg.augment),
        },
        "plan": {
            "budget_s": args.budget_s,
            "grace_s": args.grace_s,
            "reserve_s": args.reserve_s,
            "plan_share": args.plan_share,
            **rates,
            "cv_epochs": plan.cv_epochs,
            "final_epochs": final_epochs,
            "note": plan.note,
            "projected_training_s": round(plan.projected_s, 1),
        },
        "alpha_sweep": {
            "metric": "top1_loc_accuracy",
            "folds": args.folds,
            "cv_epochs": plan.cv_epochs,
            "rows": sweep.rows,
            "chosen_alpha": sweep.best,
            "note": sweep.note,
        },
        "chosen_alpha": sweep.best,
        "resampling_check_vs_pillow": checks,
        "final_training": {"epochs": final_stats, "note": final_note},
        "cv_runs": sweep.runs,
        "timing_s": {
            "python_and_imports": round(PROCESS_AGE_AT_IMPORT, 1),
            "load_and_decode": round(t_decode, 1),
            "speed_measurement": round(t_bench, 1),
            "alpha_sweep": round(sweep.seconds, 1),
            "final_training": round(t_final, 1),
        },
        "shards": shards,
    }
    meta["timing_s"]["saving"] = round(time.time() - t0, 1)
    meta["timing_s"]["total"] = round(clock.elapsed(), 1)
    (args.out_dir / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    sizes = ", ".join(f"{sh['bytes'] / 2**20:.1f} MiB" for sh in shards)
    log.info(f"wrote {len(shards)} shard(s) ({sizes}) and {args.out_dir / META_NAME}; total {clock.elapsed():.0f}s")
    return meta
