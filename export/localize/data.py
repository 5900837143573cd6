"""Data for ``python -m export localize``: datasets (Tiny ImageNet, CSV/JSONL), the service's preprocessing.

Box conventions: ``export.common.boxes``.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from export.common.boxes import xyxy_to_rchw
from export.localize.metrics import stratified_folds

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Sample:
    """One annotated image: file, class index and box in ``rchw_norm``."""

    path: Path
    label: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class LabelInfo:
    """A class of the model, in the model's class order."""

    id: str
    name: str


def preprocess(
    img: Image.Image,
    size: tuple[int, int],
    pre_resize: tuple[int, int] | None,
    flip: bool = False,
) -> np.ndarray:
    """Exactly the service's preprocessing: RGB, optional pre-resize, stretch, /255, (x-0.5)/0.5.

    ``size`` and ``pre_resize`` are ``(height, width)``; returns float32 (3, H, W).
    ``flip`` mirrors the final image (training augmentation only).
    """
    img = img.convert("RGB")
    if pre_resize is not None:
        img = img.resize((pre_resize[1], pre_resize[0]), Image.Resampling.BILINEAR)
    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    x = (pixels - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def load_image(path: Path, size: tuple[int, int], pre_resize: tuple[int, int] | None, flip: bool = False) -> np.ndarray:
    """Open ``path`` and preprocess it like the service does."""
    with Image.open(path) as img:
        return preprocess(img, size, pre_resize, flip)


def _first_name(words: str) -> str:
    return words.split(",", maxsplit=1)[0].strip()


def read_tiny_imagenet(root: Path) -> tuple[list[Sample], list[Sample], list[LabelInfo]]:
    """Tiny ImageNet 200 layout -> (train, val, labels); classes in ``wnids.txt`` order."""
    root = root.resolve()
    wnids = root.joinpath("wnids.txt").read_text().split()
    words = dict(line.split("\t", 1) for line in root.joinpath("words.txt").read_text().splitlines() if "\t" in line)
    labels = [LabelInfo(w, _first_name(words.get(w, w))) for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    train: list[Sample] = []
    for wnid in wnids:
        folder = root / "train" / wnid
        for line in folder.joinpath(f"{wnid}_boxes.txt").read_text().splitlines():
            name, *xyxy = line.split("\t")
            box = xyxy_to_rchw(*map(float, xyxy), width=64, height=64, inclusive=True)
            train.append(Sample(folder / "images" / name, index[wnid], box))
    val: list[Sample] = []
    for line in root.joinpath("val", "val_annotations.txt").read_text().splitlines():
        name, wnid, *xyxy = line.split("\t")
        box = xyxy_to_rchw(*map(float, xyxy), width=64, height=64, inclusive=True)
        val.append(Sample(root / "val" / "images" / name, index[wnid], box))
    return train, val, labels


def _read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (header ``path,label,x1,y1,x2,y2``) or JSONL (one object per line) file."""
    text = path.read_text()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [{k: str(v) for k, v in json.loads(line).items()} for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines()))


def read_box_csv(path: Path, inclusive: bool = False) -> tuple[list[Sample], list[LabelInfo]]:
    """A user's dataset: CSV/JSONL with ``path,label,x1,y1,x2,y2`` (pixels, paths relative to the file).

    Classes are the sorted distinct ``label`` values.  Image sizes are read from the files.
    """
    path = path.resolve()
    rows = _read_rows(path)
    need = {"path", "label", "x1", "y1", "x2", "y2"}
    if not rows or not need <= rows[0].keys():
        raise ValueError(f"{path}: expected columns {sorted(need)}, got {sorted(rows[0]) if rows else 'no rows'}")
    names = sorted({r["label"] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    samples: list[Sample] = []
    for r in rows:
        img_path = Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"]
        with Image.open(img_path) as img:
            width, height = img.size
        xyxy = (float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"]))
        box = xyxy_to_rchw(*xyxy, width=width, height=height, inclusive=inclusive)
        samples.append(Sample(img_path, index[r["label"]], box))
    return samples, [LabelInfo(n, n) for n in names]


def add_dataset_arguments(group: Any) -> None:
    """``--data`` / ``--data-csv`` (+ ``--val-csv``, ``--val-fraction``, ``--inclusive``): the dataset options
    shared by ``localize`` and ``localize-pack`` (read by ``load_dataset``)."""
    group.add_argument("--data", type=Path, default=None, help="Tiny ImageNet 200 folder (wnids.txt, train/, val/)")
    group.add_argument("--data-csv", type=Path, default=None, help="CSV/JSONL: path,label,x1,y1,x2,y2 (pixels)")
    group.add_argument("--val-csv", type=Path, default=None, help="validation CSV/JSONL (default: hold out a fold)")
    group.add_argument("--val-fraction", type=float, default=0.2, help="held-out share when no --val-csv")
    group.add_argument("--inclusive", action="store_true", help="CSV x2,y2 are inclusive pixel indices")


def boxes_of(samples: list[Sample]) -> np.ndarray:
    """(N, 4) float32 ``rchw_norm`` boxes."""
    return np.asarray([s.box for s in samples], dtype=np.float32).reshape(-1, 4)


def labels_of(samples: list[Sample]) -> np.ndarray:
    """(N,) int64 class indices."""
    return np.asarray([s.label for s in samples], dtype=np.int64)


def pre_resize_of(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--pre-resize H W`` (default 64 64); ``--pre-resize 0 0`` disables it."""
    h, w = args.pre_resize
    return None if h <= 0 or w <= 0 else (h, w)


@dataclass
class Dataset:
    """Training and validation samples plus the class list, and where they came from."""

    train: list[Sample]
    val: list[Sample]
    labels: list[LabelInfo]
    source: str


def load_dataset(args: argparse.Namespace) -> Dataset:
    """``--data`` (Tiny ImageNet layout) or ``--data-csv`` (+ ``--val-csv`` or a stratified hold-out)."""
    if args.data_csv is not None:
        samples, labels = read_box_csv(args.data_csv, inclusive=args.inclusive)
        if args.val_csv is not None:
            val, val_labels = read_box_csv(args.val_csv, inclusive=args.inclusive)
            remap = {lab.id: i for i, lab in enumerate(labels)}
            val = [Sample(s.path, remap[val_labels[s.label].id], s.box) for s in val]
            return Dataset(samples, val, labels, f"{args.data_csv} (val: {args.val_csv})")
        k = max(2, round(1 / args.val_fraction))
        held = set(stratified_folds(labels_of(samples), k, args.seed)[0].tolist())
        train = [s for i, s in enumerate(samples) if i not in held]
        val = [s for i, s in enumerate(samples) if i in held]
        return Dataset(train, val, labels, f"{args.data_csv} (1/{k} held out for validation)")
    if args.data is None:
        raise SystemExit("give --data DIR (Tiny ImageNet layout) or --data-csv FILE")
    train, val, labels = read_tiny_imagenet(args.data)
    return Dataset(train, val, labels, f"Tiny ImageNet 200 ({args.data.name}): train 20k for CV + training, val 10k")
