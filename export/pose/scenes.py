"""``python -m export person-scenes``: photos with one annotated person in a larger scene, for the person-box model.

``/pose`` without a box first asks a person-box model (a one-class ``localize`` model) where the person is.
It is trained like any localize model (``python -m export localize --data-csv``) on the CSV written here: one
row per scene, ``path,label,x1,y1,x2,y2`` with label ``person`` and the person's LSP-like box
(:func:`export.pose.data.joints_box`, the framing the pose model was trained on), in scene pixels.

Scenes, all from the training halves only:

* ``native``: an LSPET photo as shipped (the authors scaled each so the person is ~150 px tall; large photos
  carry much background), its box clipped to the photo;
* ``pasted``: a person crop (a whole LSP image, or an LSPET person with a random margin) pasted at a random
  scale and place onto a background: a mosaic of 1-3 x 1-3 Tiny ImageNet photos (no person classes among its
  200) stretched to a canvas of random aspect.

Validation (``val.csv``) is built the same way from people no training scene holds: LSP images 801-1000 pasted
onto Tiny ImageNet *val* photos (two scenes each), and the last ``--val-lspet`` LSPET photos native.  The JSON
beside each CSV keeps the scene's joints, so ``/pose`` can be scored end to end on it (``bench.eval_pose
--scenes``).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from export.common.logs import get_logger
from export.common.paths import CACHE, SHARED_DATA
from export.pose.data import LSP_TOTAL, LSP_TRAIN_IMAGES, PoseSample, joints_box, lsp_samples, lspet_samples

log = get_logger(__name__)
ASPECTS = (4 / 3, 3 / 4, 1.0, 3 / 2, 2 / 3, 16 / 9)  # canvas width / height
LABEL = "person"


@dataclass(frozen=True)
class SceneConfig:
    """Sizes of the pasted scenes."""

    long_side: tuple[int, int] = (320, 800)  # canvas long side, pixels
    person_height: tuple[float, float] = (0.2, 0.95)  # the person crop's height over the canvas height
    lspet_margin: tuple[float, float] = (1.05, 1.6)  # an LSPET crop: the joints box scaled by this
    quality: int = 90


def background(rng: np.random.Generator, photos: list[Path], size: tuple[int, int]) -> Image.Image:
    """A ``size`` (w, h) canvas tiled with a g x g mosaic of random ``photos``, each stretched to its cell."""
    w, h = size
    g = int(rng.integers(1, 4))
    canvas = Image.new("RGB", size)
    xs = np.linspace(0, w, g + 1).round().astype(int)
    ys = np.linspace(0, h, g + 1).round().astype(int)
    for i in range(g):
        for j in range(g):
            with Image.open(photos[int(rng.integers(len(photos)))]) as im:
                cell = im.convert("RGB").resize((xs[i + 1] - xs[i], ys[j + 1] - ys[j]), Image.Resampling.BILINEAR)
            canvas.paste(cell, (int(xs[i]), int(ys[j])))
    return canvas


def person_crop(
    rng: np.random.Generator, sample: PoseSample, cfg: SceneConfig, whole: bool
) -> tuple[Image.Image, np.ndarray]:
    """The person's image (a whole LSP image, or an LSPET person with a random margin, inside its photo) and
    the joints in its coordinates."""
    with Image.open(sample.path) as im:
        img = im.convert("RGB")
    if whole:
        return img, sample.joints.copy()
    x1, y1, x2, y2 = joints_box(sample.joints, sample.annotated)
    s = float(rng.uniform(*cfg.lspet_margin))
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, s * (x2 - x1) / 2, s * (y2 - y1) / 2
    box = (
        max(0, int(cx - hw)),
        max(0, int(cy - hh)),
        min(img.width, int(cx + hw) + 1),
        min(img.height, int(cy + hh) + 1),
    )
    return img.crop(box), sample.joints - np.asarray(box[:2], dtype=np.float64)


def paste(
    rng: np.random.Generator, crop: Image.Image, joints: np.ndarray, photos: list[Path], cfg: SceneConfig
) -> tuple[Image.Image, np.ndarray]:
    """``crop`` scaled and pasted at a random place of a random background; the joints follow."""
    aspect = ASPECTS[int(rng.integers(len(ASPECTS)))]
    long = int(rng.integers(cfg.long_side[0], cfg.long_side[1] + 1))
    w, h = (long, round(long / aspect)) if aspect >= 1 else (round(long * aspect), long)
    scale = float(rng.uniform(*cfg.person_height)) * h / crop.height
    scale = min(scale, 0.95 * w / crop.width)
    cw, ch = max(8, round(crop.width * scale)), max(8, round(crop.height * scale))
    canvas = background(rng, photos, (w, h))
    ox, oy = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    canvas.paste(crop.resize((cw, ch), Image.Resampling.BILINEAR), (ox, oy))
    sx, sy = cw / crop.width, ch / crop.height
    return canvas, joints * np.asarray([sx, sy]) + np.asarray([ox, oy], dtype=np.float64)


def clipped_box(joints: np.ndarray, annotated: np.ndarray, width: int, height: int) -> tuple[float, ...]:
    """The LSP-like box around the joints, clipped to the scene (the model's boxes are inside the image)."""
    x1, y1, x2, y2 = joints_box(joints, annotated)
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


Scene = tuple[str, Image.Image, np.ndarray, PoseSample]  # kind, image, joints in its pixels, the person


def write_split(out: Path, name: str, scenes: Iterable[Scene], cfg: SceneConfig) -> None:
    """The scenes as JPEGs under ``out/name/``, ``out/name.csv`` (path,label,x1,y1,x2,y2) and ``out/name.json``
    (the joints, annotated and visible masks, and where each scene came from)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    rows, records = [], []
    for i, (kind, img, joints, sample) in enumerate(scenes):
        file = f"{name}/{i:05d}.jpg"
        img.save(out / file, quality=cfg.quality)
        box = clipped_box(joints, sample.annotated, img.width, img.height)
        rows.append({"path": file, "label": LABEL, **dict(zip(("x1", "y1", "x2", "y2"), box, strict=True))})
        records.append(
            {
                "file": file,
                "kind": kind,
                "source": Path(sample.path).name,
                "box": list(box),
                "joints": joints.round(2).tolist(),
                "annotated": sample.annotated.tolist(),
                "visible": sample.visible.tolist(),
            }
        )
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "x1", "y1", "x2", "y2"])
        writer.writeheader()
        writer.writerows(rows)
    (out / f"{name}.json").write_text(json.dumps({"scenes": records}))
    log.info(f"{name}: {len(rows)} scenes -> {out / name}.csv")


def build(args: argparse.Namespace) -> None:
    """Write ``train`` and ``val`` scenes (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    cfg = SceneConfig()
    tiny = args.data / "tiny_imagenet_200"
    train_bg = sorted((tiny / "train").glob("*/images/*.JPEG"))
    val_bg = sorted((tiny / "val" / "images").glob("*.JPEG"))
    lsp_train = lsp_samples(args.data / "lsp_train", range(LSP_TRAIN_IMAGES))
    lsp_val = lsp_samples(args.data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    lspet = lspet_samples(args.data / "lspet")
    lspet_train, lspet_val = lspet[: len(lspet) - args.val_lspet], lspet[len(lspet) - args.val_lspet :]
    if args.limit:
        lsp_train, lspet_train = lsp_train[: args.limit], lspet_train[: args.limit]
        lsp_val, lspet_val = lsp_val[: args.limit], lspet_val[: args.limit]

    def native(s: PoseSample) -> Scene:
        with Image.open(s.path) as im:
            return "native", im.convert("RGB"), s.joints.copy(), s

    def pasted(s: PoseSample, whole: bool, photos: list[Path]) -> Scene:
        crop, joints = person_crop(rng, s, cfg, whole)
        img, moved = paste(rng, crop, joints, photos, cfg)
        return "pasted", img, moved, s

    def train() -> Iterator[Scene]:
        for s in lsp_train:
            for _ in range(args.lsp_copies):
                yield pasted(s, True, train_bg)
        for s in lspet_train:
            yield native(s)
            yield pasted(s, False, train_bg)

    def val() -> Iterator[Scene]:
        for s in lsp_val:
            yield pasted(s, True, val_bg)
            yield pasted(s, True, val_bg)
        yield from (native(s) for s in lspet_val)

    write_split(args.out, "train", train(), cfg)
    write_split(args.out, "val", val(), cfg)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``python -m export person-scenes``."""
    p = sub.add_parser(
        "person-scenes",
        help="scenes with one annotated person (LSP, LSPET) for the person-box model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", type=Path, default=SHARED_DATA, help="folder holding lsp_train/, lspet/, tiny_imagenet_200/"
    )
    p.add_argument("--out", type=Path, default=CACHE / "person_scenes")
    p.add_argument("--lsp-copies", type=int, default=4, help="pasted scenes per LSP training image")
    p.add_argument("--val-lspet", type=int, default=500, help="last LSPET people held out (native val scenes)")
    p.add_argument("--limit", type=int, default=0, help="first N people of each source only (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=build)
