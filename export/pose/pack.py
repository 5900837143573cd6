"""A compact, self-contained copy of the pose training data, for training on another machine.

``python -m export pose-pack --out DIR`` writes::

    DIR/lsp_train/{joints.mat, images/im0001.jpg ...}   LSP as shipped (whole images are the person boxes)
    DIR/lspet_crops/{samples.json, images/*.webp}         one crop per LSPET person (>= 10 annotated joints)

Each LSPET crop is the person box (``export.pose.data.joints_box``) grown ``margin`` times about its centre (pixels
outside the photo are black, exactly what the training warp fills in anyway), scaled down so the box's longer
side is at most ``box_side`` px (LSP's median person box is 176 px) and stored as WebP.  ``samples.json`` holds
the joints and box in the crop's continuous pixel coordinates.  ``export.pose.data.lspet_samples`` reads this layout
transparently, so ``python -m export pose --data DIR`` trains on it.  About 50 MB instead of 190 MB: small
enough to travel to a GPU machine.  Training on the pack differs from training on the originals only where an
augmented box reaches beyond ``margin`` (black instead of background) and by the WebP re-encoding.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from export.common.logs import get_logger
from export.pose.data import lspet_samples

log = get_logger(__name__)
PACK_MARGIN = 1.5
PACK_BOX_SIDE = 176
PACK_QUALITY = 72


def crop_sample(
    img: Image.Image, joints: np.ndarray, box: tuple[float, float, float, float], margin: float, box_side: int
) -> tuple[Image.Image, np.ndarray, tuple[float, float, float, float]]:
    """Crop ``box`` grown by ``margin`` (integer origin), scale so the box's longer side <= ``box_side``.

    Returns the crop and the joints (N, 2) and box mapped into its continuous pixel coordinates.
    """
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * margin, (y2 - y1) * margin
    ox, oy = math.floor(cx - w / 2), math.floor(cy - h / 2)
    ex, ey = math.ceil(cx + w / 2), math.ceil(cy + h / 2)
    region = img.convert("RGB").crop((ox, oy, ex, ey))
    scale = min(1.0, box_side / max(x2 - x1, y2 - y1))
    nw, nh = max(1, round(region.width * scale)), max(1, round(region.height * scale))
    if (nw, nh) != region.size:
        region = region.resize((nw, nh), Image.Resampling.BILINEAR)
    sx, sy = nw / (ex - ox), nh / (ey - oy)
    mapped = (joints - np.array([ox, oy])) * np.array([sx, sy])
    mbox = ((x1 - ox) * sx, (y1 - oy) * sy, (x2 - ox) * sx, (y2 - oy) * sy)
    return region, mapped, mbox


def pack(data: Path, out: Path, margin: float, box_side: int, quality: int) -> dict[str, float]:
    """Write the pack (see the module docstring); returns counts and sizes."""
    shutil.copytree(data / "lsp_train", out / "lsp_train", dirs_exist_ok=True)
    img_dir = out / "lspet_crops" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, s in enumerate(lspet_samples(data / "lspet")):
        with Image.open(s.path) as im:
            crop, joints, box = crop_sample(im, s.joints, s.box, margin, box_side)
        name = Path(s.path).stem + ".webp"
        crop.save(img_dir / name, "WEBP", quality=quality, method=6)
        joints = np.where(s.annotated[:, None], joints, 0.0)
        records.append(
            {
                "file": f"images/{name}",
                "joints": np.round(joints, 2).tolist(),
                "annotated": s.annotated.astype(int).tolist(),
                "visible": s.visible.astype(int).tolist(),
                "box": [round(v, 2) for v in box],
            }
        )
        if (i + 1) % 1000 == 0:
            log.info(f"packed {i + 1} LSPET people")
    meta = {"margin": margin, "box_side": box_side, "quality": quality, "source": str(data / "lspet")}
    (out / "lspet_crops" / "samples.json").write_text(
        json.dumps({"meta": meta, "samples": records}, separators=(",", ":"))
    )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"lspet_people": len(records), "megabytes": round(size / 1e6, 1)}
