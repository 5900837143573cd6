"""/pose without a box: how many pixels of the person the pipeline needs, on held-out scenes.

    python -m bench.pose_resolution --scenes cache/person_scenes          # ≈ 3 min on 2 cores

The decode rule of ``app.services.pose`` picks the JPEG draft scale from an assumed person size; this measures
what fewer pixels cost.  Each validation scene of ``python -m export person-scenes`` (held-out people) is
downscaled by 1/``f`` (Pillow's box filter, like a DCT-domain draft; re-encoded as JPEG at quality 95, the
``f = 1`` row too, so that every row is re-encoded once) and run through the service function ``run_pose``
with no box (finder looks, pose model, re-framing), decoded in full (``jpeg_draft`` off). Scenes are binned by the smaller side of their true person
box at full size, in pixels; a cell is mean PCP over the 8 limbs of that bin's scenes, the same scenes in
every column.  The pose model's input side is printed with it: a box side over that input side is how much
of the input the person fills at that scale.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image

from app.config import REPO_MODELS, Settings
from app.registry import Registry
from app.services import pose as pose_service
from app.services.common import Deadline
from app.tasks import POSE
from export.pose.metrics import pcp

BINS = (0, 96, 144, 192, 288, 10_000)


def downscaled(data: bytes, factor: float) -> bytes:
    """The JPEG ``data`` reduced by 1/``factor`` with a box filter, re-encoded at quality 95."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    if factor != 1:
        size = (max(1, round(rgb.width / factor)), max(1, round(rgb.height / factor)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=Path, required=True, help="person-scenes folder (val.json)")
    ap.add_argument("--model", default="efficientnet_lite0_lsp_pose")
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    args = ap.parse_args()
    # Decoded in full (no JPEG draft): the scale is the one set here, not the one the service would pick.
    settings = Settings(models_dir=REPO_MODELS, intra_op_threads=2, max_concurrency=1, jpeg_draft=False)
    model = Registry.load(settings).get(POSE, args.model)
    records = json.loads((args.scenes / "val.json").read_text())["scenes"]
    gt = np.array([r["joints"] for r in records], dtype=np.float64)
    mask = np.array([r["annotated"] for r in records])
    side = np.array([min(r["box"][2] - r["box"][0], r["box"][3] - r["box"][1]) for r in records])
    bins = np.digitize(side, BINS[1:-1])

    preds = {}
    for f in args.factors:
        out = []
        for r in records:
            data = downscaled((args.scenes / r["file"]).read_bytes(), f)
            res = pose_service.run_pose(model, data, pose_service.PoseParams(), settings, Deadline.start(30))
            out.append([[j.x * f, j.y * f] for j in res.response.joints])  # back to full-size pixels
        preds[f] = np.array(out)

    size = model.spec.height
    print(f"{args.model} (input {model.spec.width}x{size}), {len(records)} held-out scenes ({args.scenes})\n")
    print("| true box, smaller side at full size | scenes | " + " | ".join(f"1/{f:g}" for f in args.factors) + " |")
    print("| --- | ---: |" + " ---: |" * len(args.factors))
    rows = [
        (f"{lo}–{hi} px" if hi < BINS[-1] else f"≥ {lo} px", bins == i)
        for i, (lo, hi) in enumerate(itertools.pairwise(BINS))
    ]
    for label, sel in [*rows, ("all", np.ones(len(records), dtype=bool))]:
        cells = " | ".join(f"{pcp(preds[f][sel], gt[sel], mask[sel])['mean']:.3f}" for f in args.factors)
        print(f"| {label} | {int(sel.sum())} | {cells} |", flush=True)
    print(f"\nmedian smaller box side at full size: {np.median(side):.0f} px (pose input {size} px)")


if __name__ == "__main__":
    main()
