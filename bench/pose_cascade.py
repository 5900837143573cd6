"""/pose without a box, its cascade against itself: finder looks x the pose model's re-framing, on held-out scenes.

    python -m bench.pose_cascade --scenes cache/person_scenes           # ≈ 3 min on 2 cores

Each variant is the service function ``run_pose`` with ``PERSON_LOOKS`` set to 1, 2 or 3 and the sidecar's
``joints.framing`` kept or dropped (dropped: the pose model runs once, on the finder's box).  Scored on the
validation scenes of ``python -m export person-scenes`` (held-out people), all of them and the even and odd
halves apart, so a choice made on one half can be read on the other.  Prints a markdown table: mean PCP, and
onnxruntime runs per scene (finder looks + pose runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from app.config import REPO_MODELS, Settings
from app.model import PoseModel
from app.registry import Registry
from app.services import pose as pose_service
from app.services.common import Deadline
from app.tasks import POSE
from export.pose.metrics import pcp


def variant(model: PoseModel, framed: bool) -> PoseModel:
    joints = model.joints if framed else model.joints.model_copy(update={"framing": None})
    return dataclasses.replace(model, joints=joints)


def run_variant(model: PoseModel, scenes: list[bytes], settings: Settings) -> list[list[list[float]]]:
    out = []
    for data in scenes:
        res = pose_service.run_pose(model, data, pose_service.PoseParams(), settings, Deadline.start(30)).response
        out.append([[j.x, j.y] for j in res.joints])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=Path, required=True, help="person-scenes folder (val.json)")
    ap.add_argument("--model", default="efficientnet_lite0_lsp_pose")
    ap.add_argument("--looks", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    settings = Settings(models_dir=REPO_MODELS, intra_op_threads=2, max_concurrency=1)
    model = Registry.load(settings).get(POSE, args.model)
    if model.person is None or model.joints.framing is None:
        raise SystemExit(f"{model.name} needs a person finder (person_model) and joints.framing in its sidecar")
    records = json.loads((args.scenes / "val.json").read_text())["scenes"]
    scenes = [(args.scenes / r["file"]).read_bytes() for r in records]
    gt = np.array([r["joints"] for r in records])
    mask = np.array([r["annotated"] for r in records])
    halves = {"all": slice(None), "even": slice(0, None, 2), "odd": slice(1, None, 2)}

    print(f"{args.model}, {len(records)} held-out scenes ({args.scenes})\n")
    print("| finder looks | re-framed | runs per scene | PCP all | PCP even | PCP odd |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    original = pose_service.PERSON_LOOKS
    try:
        for looks in args.looks:
            pose_service.PERSON_LOOKS = looks
            for framed in (False, True):
                preds = np.array(run_variant(variant(model, framed), scenes, settings))
                scores = [float(pcp(preds[s], gt[s], mask[s])["mean"]) for s in halves.values()]
                runs = looks + (2 if framed else 1)  # degenerate finder boxes (rare) stop a cascade earlier
                cells = " | ".join(f"{v:.4f}" for v in scores)
                print(f"| {looks} | {'yes' if framed else 'no'} | {runs} | {cells} |", flush=True)
    finally:
        pose_service.PERSON_LOOKS = original


if __name__ == "__main__":
    main()
