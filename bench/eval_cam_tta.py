"""/cam's test-time augmentation (``tta=flip``): its effect on the CAM boxes and its cost, through ``run_cam``.

    python -m bench.eval_cam_tta --split val --limit 2000
    python -m bench.eval_cam_tta --split train --per-class 10 --offset 20

For each image, the service function ``run_cam`` with the true class (``class_index``) gives the GT-known box
(IoU >= 0.5 with the ground truth), and with ``top_k=1`` the top-1 class; once with ``tta=none``, once with
``tta=flip``, on the same images.  Reports both, their paired difference with its standard error, and the
median ms per request of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.core.cam import CamTta
from app.registry import Registry
from app.services.cam import CamParams, run_cam
from app.services.common import Deadline
from app.tasks import CAM
from bench.eval_cam import tiny_imagenet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny_imagenet_200"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_imagenet")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", choices=["val", "train"], default="val")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    settings = Settings(models_dir=args.models_dir, models=[args.model], intra_op_threads=args.threads)
    model = Registry.load(settings).get(CAM, args.model)
    samples = tiny_imagenet(args.data, args.split, per_class=args.per_class, offset=args.offset)[: args.limit]
    index = {lab.id: lab.index for lab in model.sidecar.labels}
    hits: dict[CamTta, list[bool]] = {t: [] for t in CamTta}
    top1: dict[CamTta, list[bool]] = {t: [] for t in CamTta}
    ms: dict[CamTta, list[float]] = {t: [] for t in CamTta}
    for s in samples:
        data, truth = s.path.read_bytes(), index[s.wnid]
        for tta in CamTta:  # alternating, so that both see the same machine
            t0 = time.perf_counter()
            res = run_cam(model, data, CamParams(class_index=truth, tta=tta), settings, Deadline.start(30)).response
            ms[tta].append((time.perf_counter() - t0) * 1000)
            b = res.classes[0].box
            hits[tta].append(float(iou(np.array([b.x1, b.y1, b.x2, b.y2]), np.array(s.box))) >= 0.5)
            top = run_cam(model, data, CamParams(top_k=1, tta=tta), settings, Deadline.start(30)).response
            top1[tta].append(top.classes[0].index == truth)
    n = len(samples)
    diff = np.array(hits[CamTta.flip], dtype=float) - np.array(hits[CamTta.none], dtype=float)
    result = {
        "model": args.model,
        "split": args.split,
        "images": n,
        **{
            t.value: {
                "gt_known_loc": round(float(np.mean(hits[t])), 4),
                "top1_1000": round(float(np.mean(top1[t])), 4),
                "ms_per_request_p50": round(statistics.median(ms[t]), 2),
            }
            for t in CamTta
        },
        "gt_known_flip_minus_none_pt": round(100 * float(diff.mean()), 2),
        "paired_se_pt": round(100 * float(diff.std(ddof=1) / np.sqrt(n)), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
