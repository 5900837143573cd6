"""Real photos of the 200 Tiny ImageNet classes (``imagenet_samples_200``): classification, and the boxes drawn.

    python -m bench.eval_samples --model efficientnet_lite0_tiny_localize --sheet /tmp/localize_sheet.png
    python -m bench.eval_samples --model efficientnet_lite0_imagenet        # a /cam model, its 200 classes only
    python -m bench.eval_samples --model efficientnet_lite0_imagenet --raster 512 256 [--top-k 5]   # the raster's cost

What users send: one full-size ImageNet photo per class, labels only (no boxes: look at the drawn ones).  A
check, not a tuning set.  Through the service functions (``run_localize``; for a /cam model ``run_cam``'s
logits restricted to the 200 classes).  ``--sheet`` writes a contact sheet of every photo with its box and label
(green when the class is right).  ``--raster``: ``run_cam`` (``--top-k`` classes) at each
``LOCSVC_CAM_MAX_SIDE``, the box's IoU with the first raster's box and the median post-processing ms.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from app.config import REPO_MODELS, Settings
from app.core.boxes import iou
from app.registry import Registry
from app.services.cam import CamParams, run_cam
from app.services.common import Deadline, prepare
from app.services.localize import LocalizeParams, run_localize
from app.tasks import CAM, LOCALIZE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "imagenet_samples_200"


def photos(root: Path) -> list[tuple[Path, str]]:
    """(photo, wnid) of every row of ``labels.csv``."""
    with (root / "labels.csv").open() as f:
        return [(root / "images" / r["file"], r["wnid"]) for r in csv.DictReader(f)]


def classify_cam(registry: Registry, name: str, items: list[tuple[Path, str]], settings: Settings) -> list[bool]:
    """A /cam model's top-1 among the 200 wnids (its logits through the service's own preprocessing)."""
    model = registry.get(CAM, name)
    index = {lab.id: lab.index for lab in model.sidecar.labels}
    wnids = sorted({w for _, w in items})
    rows = np.array([index[w] for w in wnids])
    ok = []
    for path, wnid in items:
        prep = prepare(path.read_bytes(), model, settings)
        logits = model.run(prep.batch, ["logits"])["logits"][0]
        ok.append(wnids[int(np.argmax(logits[rows]))] == wnid)
    return ok


def raster_cost(
    registry: Registry, name: str, items: list[tuple[Path, str]], settings: Settings, sides: list[int], top_k: int
) -> dict[str, Any]:
    """The first class's CAM box and the post-processing ms of ``run_cam`` (``top_k`` classes) on every photo at each
    raster side, against the first side's."""
    model = registry.get(CAM, name)
    params = CamParams(top_k=top_k)
    uploads = [path.read_bytes() for path, _ in items]
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    post: dict[int, list[float]] = {}
    for side in sides:
        at = settings.model_copy(update={"cam_max_side": side})
        boxes[side], post[side] = [], []
        for data in uploads:
            res = run_cam(model, data, params, at, Deadline.start(at.job_timeout_s)).response
            b = res.classes[0].box
            boxes[side].append((b.x1, b.y1, b.x2, b.y2))
            post[side].append(res.timings.postprocess_ms)
    ref = np.array(boxes[sides[0]])
    out: dict[str, Any] = {}
    for side in sides:
        overlap = iou(np.array(boxes[side]), ref)
        out[str(side)] = {
            "postprocess_ms_p50": round(float(np.median(post[side])), 2),
            f"box_iou_with_{sides[0]}_mean": round(float(overlap.mean()), 4),
            f"box_iou_with_{sides[0]}_min": round(float(overlap.min()), 4),
        }
    return out


def localize(
    registry: Registry, name: str, items: list[tuple[Path, str]], settings: Settings
) -> tuple[list[bool], list[tuple[float, float, float, float, str]]]:
    model = registry.get(LOCALIZE, name)
    ok, boxes = [], []
    for path, wnid in items:
        res = run_localize(
            model, path.read_bytes(), LocalizeParams(top_k=1), settings, Deadline.start(settings.job_timeout_s)
        ).response
        ok.append(res.label.id == wnid)
        boxes.append(
            (res.box.normalized.x1, res.box.normalized.y1, res.box.normalized.x2, res.box.normalized.y2, res.label.name)
        )
    return ok, boxes


def thumbnail_gap(
    registry: Registry, name: str, items: list[tuple[Path, str]], settings: Settings, side: int = 64
) -> dict[str, float]:
    """The train/serve gap without boxes: each photo's box and class against those of the same photo made a
    ``side``-px thumbnail (what the training images are) and sent as a PNG.  Mean IoU of the two boxes, and how
    often the class agrees."""
    model = registry.get(LOCALIZE, name)
    ious, same = [], []
    for path, _ in items:
        answers = []
        with Image.open(path) as im:
            small = im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="PNG")
        for data in (path.read_bytes(), buf.getvalue()):
            res = run_localize(
                model, data, LocalizeParams(top_k=1), settings, Deadline.start(settings.job_timeout_s)
            ).response
            n = res.box.normalized
            answers.append((np.array([n.x1, n.y1, n.x2, n.y2]), res.label.id))
        ious.append(float(iou(answers[0][0], answers[1][0])))
        same.append(answers[0][1] == answers[1][1])
    return {"box_iou_photo_vs_thumbnail": round(float(np.mean(ious)), 4), "same_class": round(float(np.mean(same)), 4)}


def contact_sheet(
    items: list[tuple[Path, str]], ok: list[bool], boxes: list[tuple[float, float, float, float, str]], out: Path
) -> None:
    """Every photo as a 160-px tile with its box and label, 20 a row."""
    tile, cols = 160, 20
    sheet = Image.new("RGB", (cols * tile, -(-len(items) // cols) * tile), "white")
    for i, ((path, _), right, (x1, y1, x2, y2, label)) in enumerate(zip(items, ok, boxes, strict=True)):
        with Image.open(path) as im:
            img = im.convert("RGB").resize((tile, tile))
        d = ImageDraw.Draw(img)
        colour = (0, 200, 0) if right else (230, 0, 0)
        d.rectangle([x1 * tile, y1 * tile, x2 * tile - 1, y2 * tile - 1], outline=colour, width=3)
        d.text((3, tile - 12), label[:24], fill=colour)
        sheet.paste(img, ((i % cols) * tile, (i // cols) * tile))
    sheet.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0_tiny_localize")
    ap.add_argument("--models-dir", type=Path, default=REPO_MODELS)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--sheet", type=Path, default=None, help="write a contact sheet of the boxes (a /localize model)")
    ap.add_argument("--gap", action="store_true", help="a /localize model: photo vs its 64-px thumbnail, box IoU")
    ap.add_argument("--raster", type=int, nargs="+", default=None, help="a /cam model: these CAM raster sides")
    ap.add_argument("--top-k", type=int, default=1, help="with --raster: classes per /cam request")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    settings = Settings(models_dir=args.models_dir, models=[args.model], intra_op_threads=args.threads)
    registry = Registry.load(settings)
    items = photos(args.data)
    result: dict[str, Any] = {"model": args.model, "photos": len(items)}
    if LOCALIZE.view(registry.models[args.model]) is not None:
        ok, boxes = localize(registry, args.model, items, settings)
        if args.sheet:
            contact_sheet(items, ok, boxes, args.sheet)
            result["sheet"] = str(args.sheet)
        if args.gap:
            result["thumbnail_gap"] = thumbnail_gap(registry, args.model, items, settings)
    else:
        ok = classify_cam(registry, args.model, items, settings)
        if args.raster:
            result["raster"] = raster_cost(registry, args.model, items, settings, args.raster, args.top_k)
    result["top1_among_200"] = round(float(np.mean(ok)), 4)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
