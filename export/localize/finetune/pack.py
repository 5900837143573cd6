"""``localize-pack``'s file: the training images' raw bytes (no re-encoding) + labels + ``rchw_norm`` boxes.

One ``.npz`` that travels to a GPU machine; there every image is decoded once at ``pre_resize`` into uint8.
"""

from __future__ import annotations

import io
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from export.common.hashing import sha256_file
from export.localize.data import LabelInfo, Sample, boxes_of, labels_of, read_tiny_imagenet


def pack_tiny_imagenet(root: Path, out: Path, pre_resize: tuple[int, int] = (64, 64)) -> dict[str, Any]:
    """Write the training split of a Tiny ImageNet folder as one ``.npz`` (raw JPEG bytes, labels, boxes)."""
    train, _, labels = read_tiny_imagenet(root)
    return pack_samples(train, labels, out, pre_resize, f"Tiny ImageNet 200 ({root.resolve().name}) train")


def pack_samples(
    train: list[Sample], labels: list[LabelInfo], out: Path, pre_resize: tuple[int, int], source: str
) -> dict[str, Any]:
    """Write training samples as one ``.npz``: the files' raw bytes (any format Pillow reads), labels, boxes.

    Every image is decoded at ``pre_resize`` (h, w) on the training machine, so sizes may differ here.
    """
    blobs = [s.path.read_bytes() for s in train]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        np.savez(
            f,
            jpeg=data,
            offsets=offsets,
            labels=labels_of(train),
            boxes=boxes_of(train),
            wnids=np.asarray([lab.id for lab in labels]),
            names=np.asarray([lab.name for lab in labels]),
            pre_resize=np.asarray(pre_resize, dtype=np.int64),
            source=np.asarray(f"{source}, {len(train)} images"),
        )
    return {
        "images": len(train),
        "classes": len(labels),
        "jpeg_bytes": int(data.size),
        "file_bytes": out.stat().st_size,
    }


@dataclass
class Pack:
    """A loaded pack: JPEG bytes + offsets, labels (N,), ``rchw_norm`` boxes (N, 4), class ids and names."""

    jpeg: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    wnids: list[str]
    names: list[str]
    pre_resize: tuple[int, int]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> Pack:
        """The images ``idx`` as a pack of their own (same classes; the source says it is a subset)."""
        blobs = [self.blob(int(i)) for i in idx]
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        jpeg = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        return Pack(
            jpeg,
            offsets,
            self.labels[idx],
            self.boxes[idx],
            self.wnids,
            self.names,
            self.pre_resize,
            f"{self.source} (subset of {len(idx)})",
            self.sha256,
        )

    def blob(self, i: int) -> bytes:
        """The file bytes of image ``i``."""
        return self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes()


def load_pack(path: Path) -> Pack:
    """A pack written by ``pack_samples``, fully in memory, with the file's sha256."""
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return Pack(
            jpeg=z["jpeg"],
            offsets=z["offsets"],
            labels=z["labels"].astype(np.int64),
            boxes=z["boxes"].astype(np.float32),
            wnids=[str(w) for w in z["wnids"]],
            names=[str(n) for n in z["names"]],
            pre_resize=(int(z["pre_resize"][0]), int(z["pre_resize"][1])),
            source=str(z["source"]),
            sha256=sha256_file(path),
        )


def decode_image(blob: bytes, hw: tuple[int, int]) -> np.ndarray:
    """JPEG bytes -> (3, H, W) uint8, as the service reads it: RGB, bilinear resize to ``hw`` (pre-resize)."""
    with Image.open(io.BytesIO(blob)) as im:
        img = im.convert("RGB").resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def decode_all(pack: Pack, workers: int | None = None) -> np.ndarray:
    """Every image of the pack, decoded once: (N, 3, H, W) uint8 (Pillow decodes without the GIL)."""
    out = np.empty((len(pack), 3, *pack.pre_resize), dtype=np.uint8)

    def work(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            out[i] = decode_image(pack.blob(i), pack.pre_resize)

    workers = workers or min(16, os.cpu_count() or 1)
    step = max(1, math.ceil(len(pack) / (4 * workers)))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda lo: work(lo, min(lo + step, len(pack))), range(0, len(pack), step)))
    return out
