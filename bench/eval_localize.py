"""Classification + localization of a /localize model on Tiny ImageNet, through the service's own pipeline.

    python -m bench.eval_localize --model efficientnet_lite0_tiny_localize [--limit 2000]

For every val image: the service function ``run_localize`` (decode -> fit -> onnxruntime -> box back in image
pixels), scored against the ground-truth box: top-1 accuracy, mean IoU of the predicted box, GT-known
localization (IoU >= 0.5 whatever the class) and top-1 localization (right class *and* IoU >= 0.5).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.registry import LoadedModel, load_model
from app.runtime import limit_blas_threads
from app.services.common import Deadline
from app.services.localize import LocalizeParams, run_localize
from bench.eval_cam import Sample, tiny_imagenet

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tiny_imagenet_200"


def per_image(model: LoadedModel, samples: list[Sample], settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(right class?, IoU of the predicted box with the ground truth) for every sample, in order."""
    correct, ious = [], []
    for s in samples:
        res = run_localize(
            model, s.path.read_bytes(), LocalizeParams(top_k=1), settings, Deadline.start(settings.job_timeout_s)
        ).response
        b = res.box
        correct.append(res.label.id == s.wnid)
        ious.append(float(iou(np.array([b.x1, b.y1, b.x2, b.y2]), np.array(s.box))))
    return np.array(correct, dtype=bool), np.array(ious)


def summarize(ok: np.ndarray, ov: np.ndarray) -> dict[str, Any]:
    """Top-1 %, mean IoU, GT-known % and top-1 localization % from :func:`per_image`'s arrays."""
    return {
        "images": len(ok),
        "top1": round(100 * float(ok.mean()), 2),
        "mean_iou": round(float(ov.mean()), 4),
        "gt_known_loc": round(100 * float((ov >= 0.5).mean()), 2),
        "top1_loc": round(100 * float((ok & (ov >= 0.5)).mean()), 2),
    }


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two models right/wrong on the same images: how many only ``a`` got right, only ``b``, and b - a in
    points with its 95 % half-width (normal approximation of McNemar's test on the discordant pairs)."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {
        "only_first": only_a,
        "only_second": only_b,
        "diff_pt": round(100 * (only_b - only_a) / len(a), 2),
        "ci95_pt": round(196 * float(np.sqrt(only_a + only_b)) / len(a), 2),
    }


def evaluate(model: LoadedModel, samples: list[Sample], settings: Settings) -> dict[str, Any]:
    """Top-1 %, mean IoU, GT-known % and top-1 localization % over ``samples`` (labels matched by dataset id)."""
    t0 = time.perf_counter()
    ok, ov = per_image(model, samples, settings)
    return summarize(ok, ov) | {"seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_tiny_localize", help="model name in --models-dir")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=0, help="first N val images (0: all 10,000)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    settings = Settings(intra_op_threads=args.threads, max_concurrency=1)
    limit_blas_threads(settings.blas_threads)
    model = load_model(args.models_dir / f"{args.model}.json", settings)
    samples = tiny_imagenet(args.data, "val")
    print(json.dumps(evaluate(model, samples[: args.limit or len(samples)], settings), indent=2))


if __name__ == "__main__":
    main()
