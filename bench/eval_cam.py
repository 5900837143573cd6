"""Weakly supervised localization of a CAM model on Tiny ImageNet, through the service's own pipeline.

    python -m bench.eval_cam --data ../shared/data/tiny_imagenet_200 --split val [--write-sidecar]

For every image: decode -> fit -> onnxruntime -> CAM of the *true* class (GT-known) and of the
predicted class, resampled onto the 64 x 64 image, box by the given rule; IoU >= 0.5 with the
ground-truth box counts as localized.  Classification is scored over the model's 1000 ImageNet
classes and restricted to the dataset's 200.  ``--split train`` (which also has boxes) is the
held-out set used to compare CAM rules, so that val is only reported, never tuned on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def tiny_imagenet(root: Path, split: str, per_class: int | None = None) -> list[Sample]:
    """Samples with continuous xyxy boxes (the files' inclusive pixel boxes + 1 on x2, y2)."""
    out: list[Sample] = []
    if split == "val":
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            f, wnid, x1, y1, x2, y2 = line.split("\t")
            out.append(Sample(root / "val" / "images" / f, wnid, (float(x1), float(y1), float(x2) + 1, float(y2) + 1)))
        return out
    for wnid in (root / "wnids.txt").read_text().split():
        lines = (root / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()
        for line in lines[: per_class or len(lines)]:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tiny_imagenet_200"))
    ap.add_argument("--split", choices=["val", "train"], default="val")
    ap.add_argument("--per-class", type=int, default=None, help="train split: images per class")
    ap.add_argument("--model", default="efficientnet_lite0_imagenet")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--write-sidecar", action="store_true", help="store the result under metrics in the model's sidecar"
    )
    args = ap.parse_args()

    settings = Settings(intra_op_threads=args.threads)
    side = REPO_MODELS / f"{args.model}.json"
    model = load_model(side, settings)
    samples = tiny_imagenet(args.data, args.split, args.per_class)[: args.limit]
    wnids = (args.data / "wnids.txt").read_text().split()
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
