"""Data for ``python -m export localize``: datasets, serving-identical preprocessing, box helpers.

Box conventions
---------------
* ``rchw_norm`` (the model's output and the sidecar's ``box_format``): ``(r, c, h, w)`` = row and
  column of the upper-left corner, height and width, each divided by the image height/width,
  so a box covering the whole image is ``(0, 0, 1, 1)``.
* Tiny ImageNet boxes are *inclusive* pixel indices ``x1, y1, x2, y2`` in ``0..63``: in continuous
  coordinates the box is ``[x1, x2 + 1) x [y1, y2 + 1)``.
* A user CSV/JSONL gives *continuous* pixel coordinates ``x1, y1, x2, y2`` (``x2 = x1 + width``),
  the convention of torchvision/COCO-xyxy; ``inclusive=True`` reads inclusive ones instead.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

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


def xyxy_to_rchw(
    x1: float, y1: float, x2: float, y2: float, *, width: float, height: float, inclusive: bool = False
) -> tuple[float, float, float, float]:
    """Pixel corners -> normalized ``(r, c, h, w)``; ``inclusive`` adds one pixel to x2 and y2."""
    extra = 1.0 if inclusive else 0.0
    x1, x2 = sorted((float(x1), float(x2)))
    y1, y2 = sorted((float(y1), float(y2)))
    r, c = y1 / height, x1 / width
    h, w = (y2 + extra - y1) / height, (x2 + extra - x1) / width
    return (
        float(np.clip(r, 0.0, 1.0)),
        float(np.clip(c, 0.0, 1.0)),
        float(np.clip(h, 0.0, 1.0 - min(r, 1.0))),
        float(np.clip(w, 0.0, 1.0 - min(c, 1.0))),
    )


def rchw_to_yxyx(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) ``(r, c, h, w)`` -> (..., 4) ``(y1, x1, y2, x2)`` (same normalization)."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.stack([b[..., 0], b[..., 1], b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two (..., 4) arrays of ``rchw_norm`` boxes (0 where the union is empty)."""
    ya, yb = rchw_to_yxyx(a), rchw_to_yxyx(b)
    ih = np.clip(np.minimum(ya[..., 2], yb[..., 2]) - np.maximum(ya[..., 0], yb[..., 0]), 0.0, None)
    iw = np.clip(np.minimum(ya[..., 3], yb[..., 3]) - np.maximum(ya[..., 1], yb[..., 1]), 0.0, None)
    inter = ih * iw
    area_a = np.clip(ya[..., 2] - ya[..., 0], 0, None) * np.clip(ya[..., 3] - ya[..., 1], 0, None)
    area_b = np.clip(yb[..., 2] - yb[..., 0], 0, None) * np.clip(yb[..., 3] - yb[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def flip_box(box: np.ndarray) -> np.ndarray:
    """Horizontal flip of (..., 4) ``rchw_norm`` boxes: ``c -> 1 - c - w``."""
    out = np.array(box, dtype=np.float32, copy=True)
    out[..., 1] = np.clip(1.0 - out[..., 1] - out[..., 3], 0.0, 1.0)
    return out


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
    shared by ``localize`` and ``localize-pack`` (read by ``export.localize.load_dataset``)."""
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
