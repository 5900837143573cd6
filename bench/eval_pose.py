"""Body joints of a /pose model on held-out people, through the service's own pipeline.

    python -m bench.eval_pose --model efficientnet_lite0_lsp_pose
    python -m bench.eval_pose --model efficientnet_lite0_lsp_pose --no-box
    python -m bench.eval_pose --model efficientnet_lite0_lsp_pose --scenes cache/person_scenes

Default: LSP images 801-1000 (never trained on), the whole image given as the person box (LSP crops are person
crops).  ``--scenes DIR``: the validation scenes of ``python -m export person-scenes`` (held-out LSP people
pasted into larger photos, and held-out LSPET photos), each scored three ways: with no box (the pose model's
person finder), with the true person box, and with the whole image as the box; plus the person finder's box
IoU.  Every answer is the service function ``run_pose`` (decode -> person box -> crop/fit -> onnxruntime ->
joints in image pixels), scored with strict PCP@0.5 and PCK@0.2 (``export.pose.metrics``, numpy only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.model import LoadedModel, PoseModel
from app.registry import Registry
from app.services.common import Deadline, Region
from app.services.pose import PoseParams, run_pose
from app.tasks import POSE
from export.pose.data import read_lsp_joints
from export.pose.metrics import pck, pcp

ROOT = Path(__file__).resolve().parents[1]
LSP = ROOT.parent / "shared" / "data" / "lsp_train"
HELD_OUT = range(800, 1000)  # 0-based: images im0801 .. im1000


def lsp_images(root: Path, indices: range) -> list[Path]:
    return [root / "images" / f"im{i + 1:04d}.jpg" for i in indices]


def scores(preds: list[list[list[float]]], gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    parts = pcp(np.array(preds), gt, mask)
    return {
        "pcp_mean": round(float(parts["mean"]), 4),
        "pcp": {k: round(float(v), 4) for k, v in parts.items() if k != "mean"},
        "pck@0.2": round(float(pck(np.array(preds), gt, mask)["mean"]), 4),
    }


def answer(model: PoseModel, data: bytes, box: Region | None, settings: Settings) -> tuple[list[list[float]], Any]:
    res = run_pose(model, data, PoseParams(box=box), settings, Deadline.start(settings.job_timeout_s)).response
    return [[j.x, j.y] for j in res.joints], res.person_box


def evaluate(
    model: LoadedModel, root: Path, settings: Settings, indices: range = HELD_OUT, *, no_box: bool = False
) -> dict[str, Any]:
    """Mean PCP (8 arm and leg limbs), PCP per part and PCK@0.2 over the LSP images ``indices``, each given its
    whole image as the box (``no_box``: none, so the pose model's person finder draws it)."""
    pose_model = POSE.view(model)
    if pose_model is None:
        raise ValueError(f"{model.name} does not serve /pose")
    xy, annotated, _ = read_lsp_joints(root / "joints.mat")
    preds = []
    t0 = time.perf_counter()
    for path in lsp_images(root, indices):
        with Image.open(path) as im:
            w, h = im.size
        box = None if no_box else (0.0, 0.0, float(w), float(h))
        preds.append(answer(pose_model, path.read_bytes(), box, settings)[0])
    out = {"images": len(indices), **scores(preds, xy[list(indices)], annotated[list(indices)])}
    return {**out, "seconds": round(time.perf_counter() - t0, 1)}


def evaluate_scenes(model: PoseModel, scenes_dir: Path, settings: Settings) -> dict[str, Any]:
    """The validation scenes of ``python -m export person-scenes``, per kind (pasted, native) and all."""
    records = json.loads((scenes_dir / "val.json").read_text())["scenes"]
    if model.person is None:
        raise SystemExit(f"{model.name} has no person finder (sidecar person_model)")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for r in records:
        data = (scenes_dir / r["file"]).read_bytes()
        found, box = answer(model, data, None, settings)
        given, _ = answer(model, data, tuple(r["box"]), settings)
        with Image.open(scenes_dir / r["file"]) as im:
            whole, _ = answer(model, data, (0.0, 0.0, float(im.width), float(im.height)), settings)
        rows.append(
            {
                "kind": r["kind"],
                "found": found,
                "given": given,
                "whole": whole,
                "iou": float(iou([box.x1, box.y1, box.x2, box.y2], r["box"])),
                "gt": r["joints"],
                "mask": r["annotated"],
            }
        )
    out: dict[str, Any] = {"person_model": model.person.name, "seconds": round(time.perf_counter() - t0, 1)}
    for kind in ("pasted", "native", "all"):
        sel = [x for x in rows if kind in ("all", x["kind"])]
        if not sel:
            continue
        gt, mask = np.array([x["gt"] for x in sel]), np.array([x["mask"] for x in sel])
        ious = np.array([x["iou"] for x in sel])
        out[kind] = {
            "scenes": len(sel),
            "no_box": scores([x["found"] for x in sel], gt, mask),
            "true_box": scores([x["given"] for x in sel], gt, mask),
            "whole_image": scores([x["whole"] for x in sel], gt, mask),
            "person_box_iou_mean": round(float(ious.mean()), 4),
            "person_box_iou>=0.5": round(float((ious >= 0.5).mean()), 4),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_lsp_pose", help="model name in --models-dir")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--data", type=Path, default=LSP)
    ap.add_argument("--scenes", type=Path, default=None, help="person-scenes folder (val.json): score without a box")
    ap.add_argument("--no-box", action="store_true", help="LSP images with no box: the person finder draws it")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    settings = Settings(models_dir=args.models_dir, intra_op_threads=args.threads, max_concurrency=1)
    registry = Registry.load(settings)
    model = registry.get(POSE, args.model)
    if args.scenes:
        result = evaluate_scenes(model, args.scenes, settings)
    else:
        result = evaluate(model, args.data, settings, no_box=args.no_box)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
