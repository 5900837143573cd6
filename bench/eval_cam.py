"""Weakly supervised localization of a CAM model on Tiny ImageNet, through the service's own pipeline.

    python -m bench.eval_cam --data ../shared/data/tiny_imagenet_200 --split val [--write-sidecar]

For every image: decode -> fit -> onnxruntime -> CAM of the *true* class (GT-known) and of the
predicted class, resampled onto the 64 x 64 image, box by the given rule; IoU >= 0.5 with the
ground-truth box counts as localized.  Classification is scored over the model's 1000 ImageNet
classes and restricted to the dataset's 200.  ``--split train`` (which also has boxes) is the
held-out set used to compare CAM rules, so that val is only reported, never tuned on.

Levers that cost nothing at inference (the wsolevaluation protocol, Choe et al. 2020: sweep on train boxes,
report val once)::

    python -m bench.eval_cam --split train --per-class 10 --sweep --save train_sweep.npz
    python -m bench.eval_cam --split val --limit 2000 --rules signed/minmax/peak/0.2,<the chosen rule>

``--sweep`` runs the network once per image and scores every rule ``clamp/norm/region/threshold`` on the same
maps: ``clamp`` = ``signed`` (the service's ``M_y = sum_k W[y,k] V[k]``) or ``clamp`` (negative weights set to 0,
Bae et al. 2020); ``norm`` = ``minmax`` | ``max`` | ``pasP`` (min to the P-th percentile, clipped: Bae et al.'s
"percentile as a standard"); ``region`` = ``peak`` | ``largest`` | ``all`` (as ``threshold_box``), ``unionF`` (one
box around the regions with at least F times the largest region's pixels) or ``multi`` (one box per region, the
best one scored: wsolevaluation's multi-contour MaxBoxAccV2 convention, an upper bound for a one-box answer).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.core.cam import CamNorm, CamRegion, class_activation_maps, normalize_map, resample, threshold_box
from app.registry import LoadedModel, load_model
from app.services.common import prepare
from app.tasks import CAM


@dataclass(frozen=True)
class Sample:
    path: Path
    wnid: str
    box: tuple[float, float, float, float]  # xyxy, continuous pixels


def tiny_imagenet(root: Path, split: str, per_class: int | None = None, offset: int = 0) -> list[Sample]:
    """Samples with continuous xyxy boxes (the files' inclusive pixel boxes + 1 on x2, y2); train: images
    ``offset`` .. ``offset + per_class`` of each class (a second held-out subset with another offset)."""
    out: list[Sample] = []
    if split == "val":
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            f, wnid, x1, y1, x2, y2 = line.split("\t")
            out.append(Sample(root / "val" / "images" / f, wnid, (float(x1), float(y1), float(x2) + 1, float(y2) + 1)))
        return out
    for wnid in (root / "wnids.txt").read_text().split():
        lines = (root / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()
        for line in lines[offset : offset + per_class if per_class else len(lines)]:
            f, x1, y1, x2, y2 = line.split("\t")
            out.append(
                Sample(root / "train" / wnid / "images" / f, wnid, (float(x1), float(y1), float(x2) + 1, float(y2) + 1))
            )
    return out


RULES = [(n, r, t) for n, r, t in itertools.product(CamNorm, CamRegion, (0.1, 0.15, 0.2, 0.3, 0.4))]
DEFAULT_RULE = (CamNorm.minmax, CamRegion.peak, 0.2)


def evaluate(
    model: LoadedModel, samples: list[Sample], settings: Settings, dataset_wnids: list[str]
) -> dict[str, object]:
    cam = CAM.view(model)
    weight = None if cam is None else cam.cam_weight
    if weight is None:
        raise ValueError(
            f"{model.name} has no CAM dense layer (cam_weight): it does not serve /cam with the CAM method"
        )
    index = {lab.id: lab.index for lab in model.sidecar.labels}
    subset = np.array([index[w] for w in dataset_wnids])
    hits = {rule: 0 for rule in RULES}
    top1_loc = 0
    top1 = top5 = top1_200 = 0
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        prep = prepare(s.path.read_bytes(), model, settings)
        out = model.run(prep.batch, ["features", "logits"])
        logits = out["logits"][0]
        truth = index[s.wnid]
        ranked = np.argsort(-logits)
        top1 += int(ranked[0] == truth)
        top5 += int(truth in ranked[:5])
        pred200 = int(subset[np.argmax(logits[subset])])
        top1_200 += int(pred200 == truth)
        w, h = prep.decoded.width, prep.decoded.height
        rows, cols = prep.fit.content_sample_positions(h, w, *out["features"].shape[2:])
        maps = class_activation_maps(out["features"][0], weight, [truth, pred200])
        raw_true = resample(maps[0], rows, cols)
        for norm in CamNorm:
            nm = normalize_map(raw_true, norm)
            for rule in (r for r in RULES if r[0] is norm):
                hits[rule] += int(iou(threshold_box(nm, rule[2], rule[1]), s.box) >= 0.5)
        if pred200 == truth:
            top1_loc += int(iou(threshold_box(normalize_map(resample(maps[1], rows, cols)), 0.2), s.box) >= 0.5)
        if (i + 1) % 500 == 0:
            rate = (i + 1) / (time.perf_counter() - t0)
            print(
                f"{i + 1}/{len(samples)}  {rate:.0f} img/s  gt-known@default {hits[DEFAULT_RULE] / (i + 1):.3f}",
                flush=True,
            )
    n = len(samples)
    return {
        "images": n,
        "top1_1000": top1 / n,
        "top5_1000": top5 / n,
        "top1_restricted_200": top1_200 / n,
        "gt_known_loc_default": hits[DEFAULT_RULE] / n,
        "top1_loc_restricted_200": top1_loc / n,
        "default_rule": {"norm": DEFAULT_RULE[0].value, "region": DEFAULT_RULE[1].value, "threshold": DEFAULT_RULE[2]},
        "gt_known_loc_by_rule": {f"{nm.value}/{rg.value}/{t}": hits[(nm, rg, t)] / n for nm, rg, t in RULES},
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ---- the levers: every rule scored on the same maps (--sweep, --rules) -----------------------------------------

SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 17))  # 0.05 .. 0.80
SWEEP_NORMS = ("minmax", "max", "pas90", "pas80")
SWEEP_REGIONS = ("peak", "largest", "all", "union0.5", "union0.2", "multi")
SWEEP_CLAMPS = ("signed", "clamp")
DELTAS = (0.3, 0.5, 0.7)  # IoU cut-offs of MaxBoxAccV2; GT-known localization is the one at 0.5
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Rule:
    clamp: str  # signed | clamp
    norm: str  # minmax | max | pasP
    region: str  # peak | largest | all | unionF | multi
    threshold: float

    def __str__(self) -> str:
        return f"{self.clamp}/{self.norm}/{self.region}/{self.threshold:g}"

    @classmethod
    def parse(cls, text: str) -> Rule:
        clamp, norm, region, threshold = text.strip().split("/")
        rule = cls(clamp, norm, region, float(threshold))
        if clamp not in SWEEP_CLAMPS or not _norm_ok(norm) or not _region_ok(region) or not 0 <= rule.threshold <= 1:
            raise ValueError(f"not a rule clamp/norm/region/threshold: {text!r}")
        return rule


def _norm_ok(norm: str) -> bool:
    return norm in ("minmax", "max") or (norm.startswith("pas") and 0 < float(norm[3:]) <= 100)


def _region_ok(region: str) -> bool:
    return region in ("peak", "largest", "all", "multi") or (region.startswith("union") and 0 <= float(region[5:]) <= 1)


DEFAULT_LEVER_RULE = Rule("signed", DEFAULT_RULE[0].value, DEFAULT_RULE[1].value, DEFAULT_RULE[2])


def lever_weight(weight: np.ndarray, clamp: str) -> np.ndarray:
    """The dense weights a map is formed with: as they are, or with the negative ones set to 0 (Bae et al.)."""
    w = np.asarray(weight, dtype=np.float32)
    return np.maximum(w, 0.0) if clamp == "clamp" else w


def lever_norm(m: np.ndarray, norm: str) -> np.ndarray:
    """``minmax`` / ``max`` as the service's ``normalize_map``; ``pasP``: (M - min) / (P-th percentile - min),
    clipped to [0, 1] (a threshold is then a fraction of the percentile, not of the peak)."""
    if norm in ("minmax", "max"):
        return normalize_map(m, CamNorm(norm))
    a = np.asarray(m, dtype=np.float64)
    lo, hi = float(a.min()), float(np.percentile(a, float(norm[3:])))
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return normalize_map(a, CamNorm.minmax)  # flat below the percentile: fall back to the range
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def region_boxes(norm: np.ndarray, threshold: float, regions: tuple[str, ...] = SWEEP_REGIONS) -> dict[str, np.ndarray]:
    """Box per region rule from one labelling of the thresholded map: ``peak``/``largest``/``all`` equal
    ``threshold_box``'s (tested); ``unionF`` one box; ``multi`` an ``(n, 4)`` array, a box per region."""
    a = np.asarray(norm, dtype=np.float64)
    mask = a >= min(threshold, float(a.max()))
    labels, n = ndimage.label(mask, structure=_EIGHT)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)], dtype=np.float64
    )
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]

    def enclose(sel: np.ndarray) -> np.ndarray:
        b = boxes[sel]
        return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])

    out: dict[str, np.ndarray] = {}
    for region in regions:
        if region == "peak":
            out[region] = boxes[int(labels[np.unravel_index(int(np.argmax(a)), a.shape)]) - 1]
        elif region == "largest":
            out[region] = boxes[int(np.argmax(areas))]
        elif region == "all":
            out[region] = enclose(np.ones(n, dtype=bool))
        elif region == "multi":
            out[region] = boxes
        else:
            out[region] = enclose(areas >= float(region[5:]) * areas.max())
    return out


def sweep_rules(
    clamps: tuple[str, ...] = SWEEP_CLAMPS,
    norms: tuple[str, ...] = SWEEP_NORMS,
    regions: tuple[str, ...] = SWEEP_REGIONS,
    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS,
) -> list[Rule]:
    return [Rule(c, n, r, t) for c, n, t, r in itertools.product(clamps, norms, thresholds, regions)]


def image_ious(raw: dict[str, np.ndarray], gt: tuple[float, ...], rules: list[Rule]) -> np.ndarray:
    """IoU with ``gt`` of each rule's box, from the resampled raw maps ``raw[clamp]`` of the true class."""
    out = np.empty(len(rules))
    by_map: dict[tuple[str, str, float], list[int]] = {}
    for j, r in enumerate(rules):
        by_map.setdefault((r.clamp, r.norm, r.threshold), []).append(j)
    normed: dict[tuple[str, str], np.ndarray] = {}
    for (clamp, norm, t), js in by_map.items():
        nm = normed.get((clamp, norm))
        if nm is None:
            nm = normed[(clamp, norm)] = lever_norm(raw[clamp], norm)
        boxes = region_boxes(nm, t, tuple(dict.fromkeys(rules[j].region for j in js)))
        for j in js:
            b = boxes[rules[j].region]
            out[j] = float(np.max(iou(b, gt))) if b.ndim == 2 else float(iou(b, gt))
    return out


def sweep(model: LoadedModel, samples: list[Sample], settings: Settings, rules: list[Rule]) -> np.ndarray:
    """``(images, rules)`` IoUs of the true class's box: the network once per image, every rule on its maps."""
    cam = CAM.view(model)
    weight = None if cam is None else cam.cam_weight
    if weight is None:
        raise ValueError(f"{model.name} has no CAM dense layer (cam_weight)")
    index = {lab.id: lab.index for lab in model.sidecar.labels}
    weights = {c: lever_weight(weight, c) for c in dict.fromkeys(r.clamp for r in rules)}
    ious = np.empty((len(samples), len(rules)))
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        prep = prepare(s.path.read_bytes(), model, settings)
        feats = model.run(prep.batch, ["features"])["features"]
        rows, cols = prep.fit.content_sample_positions(prep.decoded.height, prep.decoded.width, *feats.shape[2:])
        truth = index[s.wnid]
        raw = {c: resample(class_activation_maps(feats[0], w, [truth])[0], rows, cols) for c, w in weights.items()}
        ious[i] = image_ious(raw, s.box, rules)
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(samples)}  {(i + 1) / (time.perf_counter() - t0):.0f} img/s", flush=True)
    return ious


def binomial_se(p: float, n: int) -> float:
    return float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def summarize(ious: np.ndarray, rules: list[Rule], top: int = 20) -> dict[str, object]:
    """GT-known localization (IoU >= 0.5) per rule; per (clamp, norm, region) the best threshold (MaxBoxAcc)
    and MaxBoxAccV2 (the mean over IoU 0.3/0.5/0.7 of the best-threshold accuracy); the best one-box rules."""
    n = ious.shape[0]
    acc = (ious >= 0.5).mean(axis=0)
    families: dict[tuple[str, str, str], list[int]] = {}
    for j, r in enumerate(rules):
        families.setdefault((r.clamp, r.norm, r.region), []).append(j)
    fam_out = {}
    for (c, nm, rg), js in families.items():
        best = js[int(np.argmax(acc[js]))]
        v2 = float(np.mean([(ious[:, js] >= d).mean(axis=0).max() for d in DELTAS]))
        fam_out[f"{c}/{nm}/{rg}"] = {
            "max_box_acc": round(float(acc[best]), 4),
            "best_threshold": rules[best].threshold,
            "max_box_acc_v2": round(v2, 4),
        }
    single = [j for j, r in enumerate(rules) if r.region != "multi"]
    ranked = sorted(single, key=lambda j: -acc[j])[:top]
    d = [j for j, r in enumerate(rules) if r == DEFAULT_LEVER_RULE]
    return {
        "images": n,
        "se_at_0.6": round(binomial_se(0.6, n), 4),
        "default_rule": str(DEFAULT_LEVER_RULE),
        "gt_known_loc_default": round(float(acc[d[0]]), 4) if d else None,
        "best_single_box_rules": {str(rules[j]): round(float(acc[j]), 4) for j in ranked},
        "families": fam_out,
        "gt_known_loc_by_rule": {str(r): round(float(a), 4) for r, a in zip(rules, acc, strict=True)},
    }


def compare(ious: np.ndarray, rules: list[Rule]) -> dict[str, object]:
    """Each rule's GT-known localization with its binomial standard error, and the paired difference of each
    rule against the first one on the same images (standard error from the discordant pairs)."""
    n = ious.shape[0]
    hit = ious >= 0.5
    out: dict[str, object] = {"images": n, "rules": {}}
    for j, r in enumerate(rules):
        p = float(hit[:, j].mean())
        entry: dict[str, float] = {"gt_known_loc": round(p, 4), "se": round(binomial_se(p, n), 4)}
        if j:
            diff = hit[:, j].astype(float) - hit[:, 0]
            entry["minus_first"] = round(float(diff.mean()), 4)
            entry["paired_se"] = round(float(diff.std(ddof=1) / np.sqrt(n)), 4) if n > 1 else float("nan")
            entry["wins_losses"] = [int((diff > 0).sum()), int((diff < 0).sum())]  # type: ignore[assignment]
        out["rules"][str(r)] = entry  # type: ignore[index]
    return out


def time_levers(side: tuple[int, int] = (384, 512), runs: int = 200) -> dict[str, float]:
    """Per-map cost (ms, median) on a raster of the service's size of normalizing + boxing, by lever."""
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(7, 7))
    m = resample(grid, (np.arange(side[0]) + 0.5) * 7 / side[0], (np.arange(side[1]) + 0.5) * 7 / side[1])
    cases: dict[str, Callable[[], object]] = {
        "minmax/peak (service)": lambda: threshold_box(normalize_map(m, CamNorm.minmax), 0.2, CamRegion.peak),
        "max/peak": lambda: threshold_box(normalize_map(m, CamNorm.max), 0.2, CamRegion.peak),
        "pas90/peak": lambda: threshold_box(lever_norm(m, "pas90"), 0.2, CamRegion.peak),
        "minmax/union0.5": lambda: region_boxes(normalize_map(m), 0.2, ("union0.5",)),
    }
    out = {}
    for name, fn in cases.items():
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[name] = round(1e3 * float(np.median(ts)), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tiny_imagenet_200"))
    ap.add_argument("--split", choices=["val", "train"], default="val")
    ap.add_argument("--per-class", type=int, default=None, help="train split: images per class")
    ap.add_argument("--offset", type=int, default=0, help="train split: skip this many images per class")
    ap.add_argument("--model", default="efficientnet_lite0_imagenet")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS, help="where MODEL.json lies (default: models/)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--write-sidecar", action="store_true", help="store the result under metrics in the model's sidecar"
    )
    ap.add_argument("--sweep", action="store_true", help="score every lever rule on the same maps (choose on train)")
    ap.add_argument("--rules", default=None, help="comma-separated rules clamp/norm/region/threshold to report")
    ap.add_argument("--save", type=Path, default=None, help="--sweep/--rules: write the per-image IoUs (npz)")
    ap.add_argument("--time-levers", action="store_true", help="per-map cost of the levers on a 512 px raster")
    args = ap.parse_args()
    if args.time_levers:
        print(json.dumps(time_levers(), indent=2))
        return

    settings = Settings(intra_op_threads=args.threads)
    side = args.models_dir / f"{args.model}.json"
    model = load_model(side, settings)
    samples = tiny_imagenet(args.data, args.split, args.per_class, args.offset)[: args.limit]
    wnids = (args.data / "wnids.txt").read_text().split()
    if args.sweep or args.rules:
        rules = [Rule.parse(r) for r in args.rules.split(",")] if args.rules else sweep_rules()
        t0 = time.perf_counter()
        ious = sweep(model, samples, settings, rules)
        report = compare(ious, rules) if args.rules else summarize(ious, rules)
        report["seconds"] = round(time.perf_counter() - t0, 1)
        report["split"] = args.split
        if args.save:
            np.savez_compressed(args.save, ious=ious, rules=np.array([str(r) for r in rules]))
        print(json.dumps(report, indent=2))
        return
    result = evaluate(model, samples, settings, wnids)
    result["command"] = (
        f"python -m bench.eval_cam --split {args.split}"
        + (f" --per-class {args.per_class}" if args.per_class else "")
        + (f" --limit {args.limit}" if args.limit else "")
    )
    print(json.dumps(result, indent=2))
    if args.write_sidecar:
        meta = json.loads(side.read_text())
        meta.setdefault("metrics", {})[f"tiny_imagenet_{args.split}_cam"] = result
        side.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
