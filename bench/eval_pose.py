"""Body joints of a /pose model on the held-out LSP images, through the service's own pipeline.

    python -m bench.eval_pose --model efficientnet_lite0_lsp_pose

For LSP images 801-1000 (never trained on; the whole image is the person box, as LSP crops are): the service
function ``run_pose`` (decode -> crop/fit -> onnxruntime -> joints back in image pixels), scored with strict
PCP@0.5 and PCK@0.2 (``export.pose_metrics``, the definitions the training reports use; numpy only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import REPO_MODELS, Settings
from app.registry import LoadedModel, load_model
from app.runtime import limit_blas_threads
from app.services.common import Deadline
from app.services.pose import PoseParams, run_pose
from app.tasks import POSE
from export.pose.data import read_lsp_joints
from export.pose.metrics import pck, pcp

ROOT = Path(__file__).resolve().parents[1]
LSP = ROOT.parent / "shared" / "data" / "lsp_train"
HELD_OUT = range(800, 1000)  # 0-based: images im0801 .. im1000


def lsp_images(root: Path, indices: range) -> list[Path]:
    return [root / "images" / f"im{i + 1:04d}.jpg" for i in indices]


def evaluate(model: LoadedModel, root: Path, settings: Settings, indices: range = HELD_OUT) -> dict[str, Any]:
    """Mean PCP (8 arm and leg limbs), PCP per part and PCK@0.2 over the LSP images ``indices``."""
    pose_model = POSE.view(model)
    if pose_model is None:
        raise ValueError(f"{model.name} does not serve /pose")
    xy, annotated, _ = read_lsp_joints(root / "joints.mat")
    preds = []
    t0 = time.perf_counter()
    for path in lsp_images(root, indices):
        res = run_pose(
            pose_model, path.read_bytes(), PoseParams(), settings, Deadline.start(settings.job_timeout_s)
        ).response
        preds.append([[j.x, j.y] for j in res.joints])
    gt, mask = xy[list(indices)], annotated[list(indices)]
    parts = pcp(np.array(preds), gt, mask)
    return {
        "images": len(indices),
        "pcp_mean": round(float(parts["mean"]), 4),
        "pcp": {k: round(float(v), 4) for k, v in parts.items() if k != "mean"},
        "pck@0.2": round(float(pck(np.array(preds), gt, mask)["mean"]), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_lsp_pose", help="model name in --models-dir")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--data", type=Path, default=LSP)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    settings = Settings(intra_op_threads=args.threads, max_concurrency=1)
    limit_blas_threads(settings.blas_threads)
    model = load_model(args.models_dir / f"{args.model}.json", settings)
    print(json.dumps(evaluate(model, args.data, settings), indent=2))


if __name__ == "__main__":
    main()
