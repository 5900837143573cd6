"""End-to-end fine-tuning of the localization network (trunk included), built to run on one GPU.

Two sub-commands (``docs/localize.md``, "Fine-tuned model"):

* ``python -m export localize-pack --data DIR --out .devdata/tiny_train.npz``: the 20,000 Tiny ImageNet training
  images as their raw JPEG bytes (no re-encoding) + labels (``wnids.txt`` order) + ``rchw_norm`` boxes
  (``localize_data``'s convention) in one ``.npz`` that travels to a GPU machine;
* ``python -m export localize-finetune --pack PACK --device cuda --out-dir DIR``: decode every image once into a
  uint8 tensor on the device, choose alpha of ``E = alpha * E_cls + (1 - alpha) * E_box`` by k-fold
  cross-validation on the pack (metric: top-1 localization accuracy of the held-out fold), then train the whole
  network (trunk, tail, heads) on all images with that alpha, with a fresh random-resized crop + flip of every
  image at every step (done on the device, boxes transformed alike).  Writes the float32 state dict in shards
  (``--shard-mib``) and ``localize_finetune.json`` (sweep, chosen alpha, config, plan, timings, per-epoch stats).
  ``python -m export localize --from-finetune DIR`` exports and evaluates the result.

This module imports only torch, numpy, Pillow and export modules that import only those, so it runs on a bare
GPU machine (``EFFICIENTNET_LITE0_WEIGHTS`` names a copy of the ImageNet state dict there).

Input pixels are computed on the device with Pillow's own fixed-point bilinear arithmetic (``resample``):
evaluation input is bit-identical to the service's (64x64 image -> ``Image.resize`` to ``size`` ->
``(x / 255 - 0.5) / 0.5``), and a training crop is bit-identical to ``Image.resize(size, box=crop)`` (+ mirror),
so crop = whole image is exactly the evaluation input.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from export.localize_data import (
    MEAN,
    STD,
    LabelInfo,
    Sample,
    add_dataset_arguments,
    boxes_of,
    labels_of,
    read_tiny_imagenet,
)
from export.localize_model import BoxHead, LocalizeNet, build_lite0, build_tiny
from export.localize_train import box_loss, localization_metrics, stratified_folds

META_NAME = "localize_finetune.json"
IN_PROCESS = "(in-process)"
LOG_NAME = "localize_finetune.log"
SHARD_STEM = "localize_finetune"
FORMAT = "localize-finetune/1"


# --------------------------------------------------------------------------------------------------- pack


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
        return self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes()


def load_pack(path: Path) -> Pack:
    raw = path.read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return Pack(
            jpeg=z["jpeg"],
            offsets=z["offsets"],
            labels=z["labels"].astype(np.int64),
            boxes=z["boxes"].astype(np.float32),
            wnids=[str(w) for w in z["wnids"]],
            names=[str(n) for n in z["names"]],
            pre_resize=(int(z["pre_resize"][0]), int(z["pre_resize"][1])),
            source=str(z["source"]),
            sha256=hashlib.sha256(raw).hexdigest(),
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


# ------------------------------------------------------------------------------------------- augmentation


@dataclass
class AugmentConfig:
    """Random-resized crop (area fraction ``scale``, aspect ``ratio``) + horizontal flip, per image and step."""

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    min_box_keep: float = 0.5  # a crop keeping less of the object's box than this is replaced by the whole image
    # Resolution augmentation: with probability ``degrade`` an image is brought down to a random side in
    # [degrade_min, H) (antialiased bilinear) and back up before cropping, so the network does not depend on the
    # exact resampling chain of the 64-px thumbnails (a photo reaches it through the service's pre-resize).
    degrade: float = 0.0
    degrade_min: int = 32


def degrade_images(images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> the same with a random subset blurred by a down-and-up resampling (see ``degrade``).

    One random side per batch (drawn on the CPU generator ``gen``, like the crops); a no-op when ``degrade`` is 0.
    """
    if cfg.degrade <= 0:
        return images
    n, _, h, w = images.shape
    pick = torch.rand(n, generator=gen) < cfg.degrade
    side = int(torch.randint(min(cfg.degrade_min, h - 1), h, (1,), generator=gen))
    if not bool(pick.any()):
        return images
    idx = to_device(pick.nonzero().squeeze(1), images.device)
    sub = images[idx].float()
    small = F.interpolate(sub, size=(side, max(1, round(side * w / h))), mode="bilinear", antialias=True)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    out = images.clone()
    out[idx] = back.round().clamp(0, 255).to(torch.uint8)
    return out


def full_crops(n: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 5) crops ``(y0, x0, h, w, flip)`` covering the whole image."""
    crops = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0]).repeat(n, 1)
    if flip is not None:
        crops[:, 4] = flip
    return crops


def crop_boxes(boxes: torch.Tensor, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rchw_norm`` boxes seen through ``crops`` (clipped to the crop, mirrored where flipped).

    Returns the new boxes (n, 4) and the fraction of each box's area that stays inside its crop.
    """
    r, c, h, w = boxes.unbind(1)
    y0, x0, ch, cw, flip = crops.unbind(1)
    y1 = ((r - y0) / ch).clamp(0, 1)
    y2 = ((r + h - y0) / ch).clamp(0, 1)
    x1 = ((c - x0) / cw).clamp(0, 1)
    x2 = ((c + w - x0) / cw).clamp(0, 1)
    kept = (y2 - y1) * (x2 - x1) * ch * cw / (h * w).clamp(min=1e-8)
    f = flip > 0.5
    x1, x2 = torch.where(f, 1 - x2, x1), torch.where(f, 1 - x1, x2)
    return torch.stack([y1, x1, y2 - y1, x2 - x1], dim=1), kept


def sample_crops(boxes: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops for ``boxes`` (n, 4) on the CPU generator ``gen``; returns (crops (n, 5), new boxes (n, 4))."""
    n = boxes.shape[0]
    u = torch.rand(n, 5, generator=gen)
    area = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 0]
    lo, hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, 1])  # width / height
    cw = torch.sqrt(area * ratio).clamp(max=1.0)
    ch = torch.sqrt(area / ratio).clamp(max=1.0)
    crops = torch.stack([u[:, 2] * (1 - ch), u[:, 3] * (1 - cw), ch, cw, (u[:, 4] < cfg.flip).float()], dim=1)
    _, kept = crop_boxes(boxes, crops)
    bad = kept < cfg.min_box_keep
    crops[bad] = full_crops(int(bad.sum()), crops[bad, 4])
    new_boxes, _ = crop_boxes(boxes, crops)
    return crops, new_boxes


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> device without a host sync (pinned staging buffer, cached by torch) when the device is a GPU."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


PRECISION_BITS = 22  # Pillow's fixed-point resampling of 8-bit images (32 - 8 - 2)


def _taps(scale_max: float) -> int:
    """Taps per output pixel that hold Pillow's bilinear support at this (largest) scale, with an ulp of room."""
    support = 1.0 if scale_max < 0.999 else scale_max * (1 + 1e-6)
    return math.ceil(support) * 2 + 1


def _pil_coeffs(
    in_size: int, start: torch.Tensor, length: torch.Tensor, out_size: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's bilinear coefficients for one axis, per image (``precompute_coeffs`` + ``normalize_coeffs_8bpc``).

    ``start``/``length`` (n,) float64: the source interval in pixels; ``k`` taps (>= Pillow's ``ksize``, extra
    taps get weight 0).  Returns (first tap (n, out) int64, integer weights (n, out, k) int64 scaled by 2**22),
    computed with Pillow's double-precision formulas on ``start``'s device.
    """
    # Pillow parses the box as C floats and computes ``scale = (double)(in1 - in0) / outSize`` (float subtraction)
    in0, in1 = start.float(), (start + length).float()
    scale = (in1 - in0).double() / out_size
    filterscale = scale.clamp(min=1.0)
    support = filterscale  # bilinear: support 1
    steps = torch.arange(out_size, dtype=torch.float64, device=start.device) + 0.5
    center = in0.double()[:, None] + steps * scale[:, None]
    xmin = torch.trunc(center - support[:, None] + 0.5).clamp(min=0)
    xmax = torch.trunc(center + support[:, None] + 0.5).clamp(max=in_size) - xmin
    x = torch.arange(k, dtype=torch.float64, device=start.device)
    d = ((x + xmin[..., None]) - center[..., None] + 0.5) * (1.0 / filterscale)[:, None, None]
    w = torch.where((d.abs() < 1.0) & (x < xmax[..., None]), 1.0 - d.abs(), torch.zeros_like(d))
    ww = w.sum(-1, keepdim=True)
    w = torch.where(ww != 0, w / torch.where(ww != 0, ww, 1.0), w)
    kk = torch.trunc(0.5 + w * (1 << PRECISION_BITS)).long()
    return xmin.long(), kk


def _resample_axis(img: torch.Tensor, first: torch.Tensor, kk: torch.Tensor, dim: int) -> torch.Tensor:
    """One separable pass over ``dim`` (2: rows, 3: columns) of int64 (n, C, H, W) 8-bit levels, like Pillow."""
    n, c = img.shape[:2]
    out, k = kk.shape[1:]
    idx = (first[..., None] + torch.arange(k, device=img.device)).clamp(max=img.shape[dim] - 1)  # (n, out, k)
    if dim == 3:
        h = img.shape[2]
        g = img.gather(3, idx.view(n, 1, 1, out * k).expand(n, c, h, out * k)).view(n, c, h, out, k)
        acc = (g * kk.view(n, 1, 1, out, k)).sum(-1)
    else:
        w = img.shape[3]
        g = img.gather(2, idx.view(n, 1, out * k, 1).expand(n, c, out * k, w)).view(n, c, out, k, w)
        acc = (g * kk.view(n, 1, out, k, 1)).sum(-2)
    return ((acc + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS).clamp(0, 255)


def resample(images: torch.Tensor, crops: torch.Tensor | None, size: int) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> int64 8-bit levels (n, 3, size, size), bit-identical to Pillow.

    Each image gives ``Image.resize((size, size), BILINEAR, box=crop in pixels)`` (two fixed-point passes,
    horizontal first, exactly Pillow's arithmetic), then a left-right mirror where ``flip``.
    ``crops=None``: the whole image, i.e. the service's stretch of a ``pre_resize``-d image.
    """
    n, _, h, w = images.shape
    if crops is None:
        crops = full_crops(n)
    c_cpu = crops.to("cpu", torch.float64)
    k_cols, k_rows = _taps(float(c_cpu[:, 3].max()) * w / size), _taps(float(c_cpu[:, 2].max()) * h / size)
    c = to_device(c_cpu, images.device)  # coefficients computed on the device, without a host sync
    col0, colk = _pil_coeffs(w, c[:, 1] * w, c[:, 3] * w, size, k_cols)
    row0, rowk = _pil_coeffs(h, c[:, 0] * h, c[:, 2] * h, size, k_rows)
    x = _resample_axis(images.long(), col0, colk, 3)
    x = _resample_axis(x, row0, rowk, 2)
    flip = (c[:, 4] > 0.5).view(n, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def render(images: torch.Tensor, crops: torch.Tensor | None, size: int) -> torch.Tensor:
    """``resample`` then the service's normalization ``(x / 255 - mean) / std`` (float32, same operations)."""
    x = resample(images, crops, size).float() / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def pil_reference(images: np.ndarray, crops: np.ndarray | None, size: int) -> np.ndarray:
    """What Pillow gives for ``resample``'s job: (n, 3, size, size) uint8 (for checks and tests)."""
    out = []
    for i, im in enumerate(images):
        img = Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0)))
        h, w = im.shape[1:]
        c = [0.0, 0.0, 1.0, 1.0, 0.0] if crops is None else [float(v) for v in crops[i]]
        box = (c[1] * w, c[0] * h, c[1] * w + c[3] * w, c[0] * h + c[2] * h)
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
        if c[4] > 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
    return np.stack(out)


def resize_check(
    images: np.ndarray, size: int, device: torch.device, crops: torch.Tensor | None = None
) -> dict[str, Any]:
    """``resample`` against Pillow on the same uint8 images (8-bit levels; 0 means bit-identical)."""
    ours = resample(torch.from_numpy(images).to(device), crops, size).cpu().numpy()
    ref = pil_reference(images, None if crops is None else crops.numpy(), size)
    diff = np.abs(ours - ref.astype(np.int64))
    return {
        "n_images": len(images),
        "crops": "whole image" if crops is None else "random crops + flips",
        "max_abs_levels": int(diff.max()),
        "mean_abs_levels": float(diff.mean()),
        "share_of_values_differing": float((diff > 0).mean()),
    }


# ------------------------------------------------------------------------------------------------ model


def build_model(backbone: str, size: int, wnids: list[str], seed: int) -> LocalizeNet:
    """``LocalizeNet`` with every parameter trainable (Lite0: ImageNet weights, fc from the matching rows)."""
    if backbone == "tiny":
        model = build_tiny((size, size), len(wnids), seed=seed)
    else:
        from export.sidecar import imagenet_labels  # stdlib only

        index = {lab["id"]: int(lab["index"]) for lab in imagenet_labels()}
        model = build_lite0((size, size), wnids, index)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def param_groups(model: LocalizeNet, lr: float, trunk_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Heads (fc, box head) at ``lr``, trunk + tail at ``trunk_lr``; no weight decay on biases and norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        head = name.startswith(("fc.", "box_head."))
        groups.setdefault((head, p.ndim > 1), []).append(p)
    return [
        {"params": ps, "lr": lr if head else trunk_lr, "weight_decay": weight_decay if decay else 0.0}
        for (head, decay), ps in sorted(groups.items())
    ]


def set_train_mode(model: LocalizeNet, bn: str, momentum: float) -> None:
    """Dropout on; BatchNorm either normalizes with batch statistics (``train``) or keeps its running ones."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if bn == "frozen":
                m.eval()
            else:
                m.momentum = momentum


def rchw_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of (n, 4) ``rchw`` boxes (torch)."""
    a1, a2 = a[:, :2], a[:, :2] + a[:, 2:]
    b1, b2 = b[:, :2], b[:, :2] + b[:, 2:]
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(1)
    union = a[:, 2:].prod(1) + b[:, 2:].prod(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


# --------------------------------------------------------------------------------------------- training


class OutOfTime(Exception):
    """The hard deadline (``--budget-s`` + ``--grace-s``) passed; training stops where it is."""


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``), so the budget includes Python's start-up."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - start)
    except (OSError, ValueError, IndexError):
        return 0.0


class Clock:
    """Elapsed seconds (from ``startup_s`` before now); ``check()`` raises ``OutOfTime`` after the hard deadline."""

    def __init__(self, hard_s: float | None, startup_s: float = 0.0) -> None:
        self.t0 = time.time() - startup_s
        self.hard_s = hard_s

    def elapsed(self) -> float:
        return time.time() - self.t0

    def check(self) -> None:
        if self.hard_s is not None and self.elapsed() > self.hard_s:
            raise OutOfTime(f"hard deadline {self.hard_s:.0f}s reached")


@dataclass
class FinetuneConfig:
    """Hyper-parameters shared by every cross-validation run and the final training."""

    size: int = 160
    batch: int = 256
    eval_batch: int = 512
    lr: float = 2e-3
    trunk_lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    bn: str = "train"
    bn_momentum: float = 0.1
    bf16: bool = True
    channels_last: bool = True
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class Data:
    """Decoded images on the device (uint8) + labels and boxes on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


class Progress:
    """Counts training/eval images against the plan, for img/s and ETA lines."""

    def __init__(self, clock: Clock, log: Callable[[str], None]) -> None:
        self.clock, self.log = clock, log
        self.plan_train = self.plan_eval = 0
        self.done_train = self.done_eval = 0
        self.rate_train, self.rate_eval = 1.0, 3.0

    def eta(self) -> float:
        left_train = max(0, self.plan_train - self.done_train)
        left_eval = max(0, self.plan_eval - self.done_eval)
        return left_train / max(self.rate_train, 1e-6) + left_eval / max(self.rate_eval, 1e-6)


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_run(
    model: LocalizeNet,
    data: Data,
    idx: np.ndarray,
    alpha: float,
    epochs: int,
    cfg: FinetuneConfig,
    *,
    seed: int,
    clock: Clock,
    progress: Progress,
    tag: str,
) -> list[dict[str, float]]:
    """Train the whole ``model`` on images ``idx`` for ``epochs`` with ``alpha``; per-epoch stats.

    Every step draws a fresh crop + flip for each image (CPU generator, so CPU and GPU runs see the same
    crops), renders it on the device and minimizes ``alpha * CE + (1 - alpha) * E_box``.  AdamW with a linear
    warm-up and a cosine decay to 0; ``drop_last`` so every step has the same shape (cuDNN autotuning).
    """
    device = data.images.device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = len(idx)
    batch = min(cfg.batch, n)
    steps = n // batch
    total = max(1, epochs * steps)
    warmup = max(1, min(round(cfg.warmup_epochs * steps), total // 5))
    opt = torch.optim.AdamW(
        param_groups(model, cfg.lr, cfg.trunk_lr, cfg.weight_decay), fused=device.type == "cuda" or None
    )
    base = [g["lr"] for g in opt.param_groups]
    idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    stats: list[dict[str, float]] = []
    step = 0
    for epoch in range(epochs):
        set_train_mode(model, cfg.bn, cfg.bn_momentum)
        t0 = time.time()
        perm = idx_t[torch.randperm(n, generator=gen)]
        sums = torch.zeros(5, device=device)
        for s in range(steps):
            clock.check()
            scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * scale
            sel = perm[s * batch : (s + 1) * batch]
            crops, boxes = sample_crops(data.boxes[sel], gen, cfg.augment)
            x = render(degrade_images(data.images[to_device(sel, device)], gen, cfg.augment), crops, cfg.size)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, boxes = to_device(data.labels[sel], device), to_device(boxes, device)
            with _autocast(device, cfg.bf16):
                logits, corners = model.heads(model.trunk(x))
            logits, corners = logits.float(), corners.float()
            e_cls = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            e_box = box_loss(corners, boxes)
            loss = alpha * e_cls + (1 - alpha) * e_box
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            with torch.no_grad():
                right = (logits.argmax(1) == y).float().sum()
                iou = rchw_iou(BoxHead.to_rchw(corners), boxes).sum()
                sums += torch.stack([loss.detach() * batch, e_cls.detach() * batch, e_box.detach() * batch, right, iou])
            step += 1
        m = (sums / max(1, steps * batch)).tolist()  # one sync per epoch
        dt = time.time() - t0
        rate = steps * batch / max(dt, 1e-6)
        progress.done_train += steps * batch
        progress.rate_train = rate
        row = {
            "epoch": epoch + 1,
            "loss": round(m[0], 5),
            "cls": round(m[1], 5),
            "box": round(m[2], 5),
            "train_top1_aug": round(m[3], 4),
            "train_iou_aug": round(m[4], 4),
            "seconds": round(dt, 2),
            "img_per_s": round(rate, 1),
        }
        stats.append(row)
        eta = progress.eta()
        progress.log(
            f"  [{tag}] epoch {epoch + 1}/{epochs}: loss {m[0]:.4f} (cls {m[1]:.4f}, box {m[2]:.4f}), "
            f"train top1 {m[3]:.3f} IoU {m[4]:.3f} (augmented) | {rate:,.0f} img/s | "
            f"elapsed {clock.elapsed():.0f}s, ETA {eta:.0f}s -> projected total {clock.elapsed() + eta:.0f}s"
        )
    model.eval()
    return stats


@torch.no_grad()
def predict(model: LocalizeNet, data: Data, idx: np.ndarray, cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray]:
    """(logits, ``rchw_norm`` boxes) of images ``idx`` through the service's preprocessing, eval mode.

    The last batch is padded to ``eval_batch`` (BatchNorm uses running statistics, so padding changes
    nothing) to keep one input shape.
    """
    model.eval()
    device = data.images.device
    logits, boxes = [], []
    idx_t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    bs = cfg.eval_batch
    for start in range(0, len(idx_t), bs):
        sel = idx_t[start : start + bs]
        k = len(sel)
        if k < bs and len(idx_t) > bs:
            sel = torch.cat([sel, sel[:1].repeat(bs - k)])
        x = render(data.images[to_device(sel, device)], None, cfg.size)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, cfg.bf16):
            lg, corners = model.heads(model.trunk(x))
        logits.append(lg.float()[:k].cpu())
        boxes.append(BoxHead.to_rchw(corners.float())[:k].cpu())
    return torch.cat(logits).numpy(), torch.cat(boxes).numpy()


def evaluate(model: LocalizeNet, data: Data, idx: np.ndarray, cfg: FinetuneConfig) -> dict[str, float]:
    logits, boxes = predict(model, data, idx, cfg)
    return localization_metrics(logits.argmax(1), boxes, data.labels[idx].numpy(), data.boxes[idx].numpy())


def chosen_alpha(rows: Sequence[dict[str, Any]], default: float) -> float:
    """The alpha with the best mean top-1 localization accuracy over the folds (the first on ties)."""
    if not rows:
        return default
    return float(max(rows, key=lambda r: float(r["top1_loc_accuracy_mean"]))["alpha"])


def sweep_rows(alphas: Sequence[float], results: dict[float, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per alpha: the fold scores and mean +- std (ddof 1) of every metric (``localize_report``'s format).

    Only folds that every alpha completed count, so a sweep cut short stays a paired comparison.
    """
    k = min(len(results.get(a, [])) for a in alphas) if alphas else 0
    rows: list[dict[str, Any]] = []
    if k == 0:
        return rows
    for a in alphas:
        per_fold = results[a][:k]
        row: dict[str, Any] = {"alpha": float(a), "folds": [p["top1_loc_accuracy"] for p in per_fold]}
        for name in per_fold[0]:
            vals = np.asarray([p[name] for p in per_fold])
            row[f"{name}_mean"] = float(vals.mean())
            row[f"{name}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- planning


@dataclass
class Plan:
    cv_epochs: int
    final_epochs: int
    projected_s: float
    note: str


def plan_epochs(
    *,
    rate_train: float,
    rate_eval: float,
    n_fit: int,
    n_held: int,
    n_all: int,
    runs: int,
    cv_epochs: int,
    final_epochs: int,
    min_final: int,
    available_s: float,
) -> Plan:
    """Epochs that fit ``available_s`` at the measured rates (images per second).

    The requested plan if it fits.  Otherwise the most CV epochs (>= 1) that still leave ``min_final`` final
    epochs, and then as many final epochs (<= requested) as the remaining time holds; when not even 1 CV epoch
    fits beside ``min_final`` final ones, 1 CV epoch and fewer final epochs (at least ``min_final // 4``),
    else no cross-validation at all.
    """
    epoch_s = n_all / rate_train

    def cv_s(ec: int) -> float:
        return runs * (ec * n_fit / rate_train + n_held / rate_eval) if runs and ec else 0.0

    def made(ec: int, note: str) -> Plan:
        ef = max(1, min(final_epochs, int((available_s - cv_s(ec)) // epoch_s)))
        return Plan(ec, ef, cv_s(ec) + ef * epoch_s, note)

    if cv_s(cv_epochs) + final_epochs * epoch_s <= available_s:
        return Plan(cv_epochs, final_epochs, cv_s(cv_epochs) + final_epochs * epoch_s, "as requested")
    floor = min(min_final, final_epochs)
    for ec in range(cv_epochs, 0, -1):
        if runs and cv_s(ec) + floor * epoch_s <= available_s:
            return made(ec, f"cut to fit: cv epochs {cv_epochs} -> {ec}, then final epochs fill the rest")
    if runs and cv_epochs and (available_s - cv_s(1)) // epoch_s >= max(1, floor // 4):
        return made(1, f"cut to fit: cv epochs {cv_epochs} -> 1, final epochs below {floor}")
    return made(0, "cut to fit: no time for cross-validation")


def measure_rates(model: LocalizeNet, data: Data, cfg: FinetuneConfig, steps: int) -> tuple[float, float]:
    """Training and evaluation images/s on a throw-away copy (also warms up cuDNN autotuning)."""
    probe = copy.deepcopy(model)
    n = len(data.labels)
    idx = np.arange(n)
    sink = Progress(Clock(None), lambda _: None)
    warm_epochs = 1
    sub = idx[: min(n, cfg.batch * 2)]
    train_run(probe, data, sub, 0.5, warm_epochs, cfg, seed=0, clock=Clock(None), progress=sink, tag="warm-up")
    _sync(data.images.device)
    sub = idx[: min(n, cfg.batch * steps)]
    t0 = time.time()
    train_run(probe, data, sub, 0.5, 1, cfg, seed=1, clock=Clock(None), progress=sink, tag="bench")
    _sync(data.images.device)
    rate_train = (len(sub) // min(cfg.batch, len(sub))) * min(cfg.batch, len(sub)) / (time.time() - t0)
    sub = idx[: min(n, cfg.eval_batch)]
    predict(probe, data, sub, cfg)
    _sync(data.images.device)
    sub = idx[: min(n, cfg.eval_batch * 2)]
    t0 = time.time()
    predict(probe, data, sub, cfg)
    _sync(data.images.device)
    rate_eval = len(sub) / (time.time() - t0)
    del probe
    return rate_train, rate_eval


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- saving


def save_shards(state: dict[str, torch.Tensor], out_dir: Path, max_bytes: int) -> list[dict[str, Any]]:
    """Float32 CPU tensors split into ``torch.save`` files of at most ``max_bytes`` payload each."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        t = t.float() if t.is_floating_point() else t
        nbytes = t.numel() * t.element_size()
        if nbytes > max_bytes:
            raise ValueError(f"{key}: {nbytes} bytes, more than a shard may hold ({max_bytes})")
        if size + nbytes > max_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    for i, part in enumerate(shards):
        path = out_dir / f"{SHARD_STEM}-{i + 1:05d}-of-{len(shards):05d}.pt"
        torch.save(part, path)
        files.append({"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path), "keys": len(part)})
    return files


def load_shards(directory: Path, shards: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The state dict written by ``save_shards`` (checks every file's sha256 and that keys do not repeat)."""
    state: dict[str, torch.Tensor] = {}
    for s in shards:
        path = directory / s["file"]
        if _sha256(path) != s["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {META_NAME}")
        part = torch.load(path, map_location="cpu", weights_only=True)
        if state.keys() & part.keys():
            raise ValueError(f"{path}: keys repeated across shards")
        state.update(part)
    return state


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_finetuned(directory: Path) -> tuple[dict[str, Any], LocalizeNet]:
    """(metadata, model in eval mode) from a ``localize-finetune`` output folder."""
    meta = json.loads((directory / META_NAME).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory / META_NAME}: format {meta.get('format')!r}, expected {FORMAT!r}")
    cfg = meta["config"]
    model = build_model(cfg["backbone"], cfg["size"], meta["classes"]["wnids"], cfg["seed"])
    model.load_state_dict(load_shards(directory, meta["shards"]), strict=True)
    return meta, model.eval()


# ------------------------------------------------------------------------------------------------- main


PROCESS_AGE_AT_IMPORT = process_age()


def command_line() -> str:
    """This process's command as ``python -m export ...`` (or a note when called in-process, e.g. by tests)."""
    if "localize-finetune" not in sys.argv:
        return IN_PROCESS
    return "python -m export " + shlex.join(sys.argv[sys.argv.index("localize-finetune") :])


LOG_FILES: list[Any] = []  # open text files that ``_log`` copies every line to (the run's log in --out-dir)


def _log(msg: str) -> None:
    print(msg, flush=True)
    for f in LOG_FILES:
        f.write(msg + "\n")
        f.flush()


def _config(args: argparse.Namespace, device: torch.device) -> FinetuneConfig:
    return FinetuneConfig(
        size=args.size,
        batch=args.batch,
        eval_batch=args.eval_batch,
        lr=args.lr,
        trunk_lr=args.trunk_lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        bn=args.bn,
        bn_momentum=args.bn_momentum,
        bf16=args.bf16 if args.bf16 is not None else device.type == "cuda",
        channels_last=device.type == "cuda",
        seed=args.seed,
        augment=AugmentConfig(
            (args.crop_scale[0], args.crop_scale[1]),
            (args.crop_ratio[0], args.crop_ratio[1]),
            args.flip,
            args.min_box_keep,
            args.degrade,
            args.degrade_min,
        ),
    )


def _used(n: int, batch: int) -> int:
    """Images one epoch of ``train_run`` sees (``drop_last``)."""
    b = min(batch, n)
    return n // b * b if n else 0


def run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    """The whole ``localize-finetune`` command; returns the metadata it writes (log copied to --out-dir)."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with (args.out_dir / LOG_NAME).open("w") as log:
        LOG_FILES.append(log)
        try:
            return _run_finetune(args)
        finally:
            LOG_FILES.remove(log)


def _run_finetune(args: argparse.Namespace) -> dict[str, Any]:
    # the budget counts from the process start when run as a command (Python + torch start-up included)
    startup = process_age() if command_line() != IN_PROCESS else 0.0
    clock = Clock(args.budget_s + args.grace_s if args.budget_s > 0 else None, startup)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = _config(args, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    _log(f"device {dev_name}, torch {torch.__version__}, bf16 {cfg.bf16}; process age {clock.elapsed():.1f}s")

    # ---- data: every JPEG decoded once, kept on the device as uint8
    t0 = time.time()
    pack = load_pack(args.pack)
    if args.limit and args.limit < len(pack):
        pick = np.sort(np.random.default_rng(args.seed).permutation(len(pack))[: args.limit])
        pack = pack.subset(pick)
    images = decode_all(pack)
    data = Data(torch.from_numpy(images).to(device), torch.from_numpy(pack.labels), torch.from_numpy(pack.boxes))
    t_decode = time.time() - t0
    n = len(pack)
    _log(f"pack {args.pack}: {n} images {tuple(images.shape[1:])}, {len(pack.wnids)} classes, decoded {t_decode:.1f}s")
    k = min(64, n)
    crops, _ = sample_crops(data.boxes[:k], torch.Generator().manual_seed(args.seed), cfg.augment)
    checks = [resize_check(images[:k], cfg.size, device), resize_check(images[:k], cfg.size, device, crops)]
    _log(f"device resampling vs Pillow (8-bit levels): {checks}")

    # ---- model: pretrained Lite0, every parameter trainable, box head starting at the mean training box
    model = build_model(args.backbone, cfg.size, pack.wnids, args.seed).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    mean_box = pack.boxes.mean(axis=0)
    model.box_head.init_to_box(mean_box)
    init = {key: v.detach().clone() for key, v in model.state_dict().items()}

    # ---- plan: measure the speed, fit the epochs into the budget
    alphas = [float(a) for a in args.alphas]
    folds = stratified_folds(pack.labels, args.folds, args.seed) if len(alphas) > 1 else []
    runs = len(alphas) * len(folds)
    n_held = max((len(f) for f in folds), default=0)
    n_fit = _used(n - min((len(f) for f in folds), default=0), cfg.batch)
    n_all = _used(n, cfg.batch)
    progress = Progress(clock, _log)
    plan = Plan(args.cv_epochs if runs else 0, args.epochs, float("nan"), "no time budget (--budget-s 0)")
    rates: dict[str, float] = {}
    t0 = time.time()
    if args.budget_s > 0:
        progress.rate_train, progress.rate_eval = measure_rates(model, data, cfg, args.bench_steps)
        rates = {"train_img_per_s": round(progress.rate_train, 1), "eval_img_per_s": round(progress.rate_eval, 1)}
        available = args.budget_s - clock.elapsed() - args.reserve_s
        plan = plan_epochs(
            rate_train=progress.rate_train,
            rate_eval=progress.rate_eval,
            n_fit=n_fit,
            n_held=n_held,
            n_all=n_all,
            runs=runs,
            cv_epochs=args.cv_epochs,
            final_epochs=args.epochs,
            min_final=args.min_epochs,
            available_s=args.plan_share * available,
        )
        _log(
            f"measured {progress.rate_train:,.0f} train img/s, {progress.rate_eval:,.0f} eval img/s "
            f"({time.time() - t0:.1f}s); {available:.0f}s left -> plan: {runs} CV runs x {plan.cv_epochs} epochs, "
            f"final {plan.final_epochs} epochs ({plan.note}); projected total {clock.elapsed() + plan.projected_s:.0f}s "
            f"of budget {args.budget_s:.0f}s (hard stop {clock.hard_s:.0f}s)"
        )
    t_bench = time.time() - t0
    progress.plan_train = runs * plan.cv_epochs * n_fit + plan.final_epochs * n_all
    progress.plan_eval = runs * n_held if plan.cv_epochs else 0

    # ---- alpha by k-fold cross-validation, fold-major (a sweep cut short still compares every alpha)
    t0 = time.time()
    results: dict[float, list[dict[str, float]]] = {a: [] for a in alphas}
    cv_runs: list[dict[str, Any]] = []
    cv_note = ""
    # no CV run starts after this point, so that the planned final epochs still fit
    cv_deadline = args.budget_s - args.reserve_s - plan.final_epochs * n_all / max(progress.rate_train, 1e-6)
    try:
        for f, held in enumerate(folds if plan.cv_epochs else []):
            fit = np.setdiff1d(np.arange(n), held)
            for a in alphas:
                run_s = plan.cv_epochs * n_fit / progress.rate_train + n_held / progress.rate_eval
                if args.budget_s > 0 and f > 0 and clock.elapsed() + run_s > cv_deadline:
                    raise OutOfTime(f"cross-validation past its share of the budget ({cv_deadline:.0f}s)")
                model.load_state_dict(init)
                tag = f"cv fold {f + 1}/{len(folds)} alpha {a}"
                seed = args.seed + 1000 * (f + 1)  # the same crops for every alpha of a fold: a paired comparison
                stats = train_run(
                    model, data, fit, a, plan.cv_epochs, cfg, seed=seed, clock=clock, progress=progress, tag=tag
                )
                te = time.time()
                m = evaluate(model, data, held, cfg)
                progress.done_eval += len(held)
                progress.rate_eval = len(held) / max(time.time() - te, 1e-6)
                results[a].append(m)
                cv_runs.append({"fold": f + 1, "alpha": a, "held_out": m, "epochs": stats})
                _log(f"  [{tag}] held-out fold: " + ", ".join(f"{key} {v:.4f}" for key, v in m.items()))
    except OutOfTime as exc:
        cv_note = f"cross-validation stopped early: {exc}"
        _log(cv_note)
    rows = sweep_rows(alphas, results)
    best = chosen_alpha(rows, args.default_alpha if len(alphas) > 1 else alphas[0])
    t_cv = time.time() - t0
    for r in rows:
        folds_txt = ", ".join(f"{v:.4f}" for v in r["folds"])
        _log(
            f"alpha {r['alpha']}: top-1 loc {r['top1_loc_accuracy_mean']:.4f} +- {r['top1_loc_accuracy_std']:.4f} "
            f"(folds {folds_txt}), top-1 {r['top1_accuracy_mean']:.4f}, mean IoU {r['mean_iou_mean']:.4f}"
        )
    _log(f"chosen alpha = {best} ({t_cv:.0f}s of cross-validation)")

    # ---- final training on all images with the chosen alpha
    final_epochs = plan.final_epochs
    if args.budget_s > 0:
        left = args.plan_share * (args.budget_s - args.reserve_s - clock.elapsed())
        fit_epochs = int(left // (n_all / max(progress.rate_train, 1e-6)))
        if fit_epochs < final_epochs:
            _log(f"final epochs {final_epochs} -> {max(1, fit_epochs)} to stay in the budget")
            final_epochs = max(1, fit_epochs)
    progress.plan_train = progress.done_train + final_epochs * n_all
    progress.plan_eval = progress.done_eval
    model.load_state_dict(init)
    t0 = time.time()
    final_note = ""
    final_stats: list[dict[str, float]] = []
    try:
        final_stats = train_run(
            model,
            data,
            np.arange(n),
            best,
            final_epochs,
            cfg,
            seed=args.seed,
            clock=clock,
            progress=progress,
            tag="final",
        )
    except OutOfTime as exc:
        final_note = f"final training stopped early: {exc}"
        _log(final_note)
    model.eval()
    t_final = time.time() - t0

    # ---- save: float32 state dict in shards + metadata
    t0 = time.time()
    shards = save_shards(model.state_dict(), args.out_dir, int(args.shard_mib * 2**20))
    meta: dict[str, Any] = {
        "format": FORMAT,
        "command": command_line(),
        "env": {key: os.environ[key] for key in ("EFFICIENTNET_LITE0_WEIGHTS",) if key in os.environ},
        "device": dev_name,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "pack": {"file": str(args.pack), "sha256": pack.sha256, "source": pack.source, "images": n},
        "classes": {"wnids": pack.wnids, "names": pack.names},
        "config": {
            "backbone": args.backbone,
            "size": cfg.size,
            "pre_resize": list(pack.pre_resize),
            "seed": args.seed,
            "epochs_requested": args.epochs,
            "cv_epochs_requested": args.cv_epochs,
            "epochs": final_epochs,
            "cv_epochs": plan.cv_epochs,
            "folds": args.folds,
            "alphas": alphas,
            "limit": args.limit,
            "mean_train_box_rchw": [round(float(v), 6) for v in mean_box],
            **{key: v for key, v in asdict(cfg).items() if key not in ("augment", "size", "seed")},
            "augment": asdict(cfg.augment),
        },
        "plan": {
            "budget_s": args.budget_s,
            "grace_s": args.grace_s,
            "reserve_s": args.reserve_s,
            "plan_share": args.plan_share,
            **rates,
            "cv_epochs": plan.cv_epochs,
            "final_epochs": final_epochs,
            "note": plan.note,
            "projected_training_s": round(plan.projected_s, 1),
        },
        "alpha_sweep": {
            "metric": "top1_loc_accuracy",
            "folds": args.folds,
            "cv_epochs": plan.cv_epochs,
            "rows": rows,
            "chosen_alpha": best,
            "note": cv_note,
        },
        "chosen_alpha": best,
        "resampling_check_vs_pillow": checks,
        "final_training": {"epochs": final_stats, "note": final_note},
        "cv_runs": cv_runs,
        "timing_s": {
            "python_and_imports": round(PROCESS_AGE_AT_IMPORT, 1),
            "load_and_decode": round(t_decode, 1),
            "speed_measurement": round(t_bench, 1),
            "alpha_sweep": round(t_cv, 1),
            "final_training": round(t_final, 1),
        },
        "shards": shards,
    }
    meta["timing_s"]["saving"] = round(time.time() - t0, 1)
    meta["timing_s"]["total"] = round(clock.elapsed(), 1)
    (args.out_dir / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    sizes = ", ".join(f"{sh['bytes'] / 2**20:.1f} MiB" for sh in shards)
    _log(f"wrote {len(shards)} shard(s) ({sizes}) and {args.out_dir / META_NAME}; total {clock.elapsed():.0f}s")
    return meta


def run_pack(args: argparse.Namespace) -> None:
    t0 = time.time()
    pre = (int(args.pre_resize[0]), int(args.pre_resize[1]))
    if min(pre) < 1:
        raise SystemExit("--pre-resize must be positive: the device holds every image at that size")
    if args.data_csv is not None:
        from export.localize import load_dataset  # here only (needs more than the device has); the same split

        ds = load_dataset(args)
        info = pack_samples(ds.train, ds.labels, args.out, pre, f"{ds.source}, training part")
    elif args.data is not None:
        info = pack_tiny_imagenet(args.data, args.out, pre)
    else:
        raise SystemExit("give --data DIR (Tiny ImageNet layout) or --data-csv FILE")
    _log(f"wrote {args.out}: {info} in {time.time() - t0:.1f}s")
    if args.check > 0:
        pack = load_pack(args.out)
        imgs = np.stack([decode_image(pack.blob(i), pack.pre_resize) for i in range(min(args.check, len(pack)))])
        _log(
            f"resize check vs Pillow bilinear ({len(imgs)} images, 8-bit levels): "
            f"{resize_check(imgs, args.size, torch.device('cpu'))}"
        )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``localize-pack`` and ``localize-finetune``."""
    p = sub.add_parser("localize-pack", help="pack the training images (file bytes) + labels + boxes for the GPU")
    add_dataset_arguments(p)  # the same options as `localize`, so that both hold out the same validation part
    p.add_argument("--pre-resize", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="training size")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out (as in `localize`)")
    p.add_argument("--out", type=Path, default=Path(".devdata") / "tiny_train.npz")
    p.add_argument("--check", type=int, default=256, help="images for the resize check vs Pillow (0: skip)")
    p.add_argument("--size", type=int, default=160, help="model input side for the resize check")
    p.set_defaults(func=run_pack)

    f = sub.add_parser(
        "localize-finetune",
        help="fine-tune the whole localization network (alpha by k-fold CV, then all images); GPU",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--pack", type=Path, required=True, help="file written by localize-pack")
    f.add_argument("--out-dir", type=Path, required=True, help="state-dict shards + localize_finetune.json")
    f.add_argument("--device", default="cuda")
    f.add_argument("--backbone", choices=("lite0", "tiny"), default="lite0", help="tiny: random small CNN (tests)")
    f.add_argument("--size", type=int, default=160, help="square model input side")
    f.add_argument("--limit", type=int, default=0, help="use a random subset of this many images (smoke runs)")
    f.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75, 0.9])
    f.add_argument("--default-alpha", type=float, default=0.5, help="when no cross-validation run finished")
    f.add_argument("--folds", type=int, default=3)
    f.add_argument("--cv-epochs", type=int, default=3, help="epochs of each cross-validation run (upper bound)")
    f.add_argument("--epochs", type=int, default=30, help="epochs of the final training (upper bound)")
    f.add_argument("--min-epochs", type=int, default=20, help="final epochs kept before CV epochs are cut")
    f.add_argument("--batch", type=int, default=256)
    f.add_argument("--eval-batch", type=int, default=512)
    f.add_argument("--lr", type=float, default=2e-3, help="heads (fc, box head), AdamW peak")
    f.add_argument("--trunk-lr", type=float, default=3e-4, help="trunk + tail, AdamW peak")
    f.add_argument("--weight-decay", type=float, default=0.05, help="decoupled; not on biases and norms")
    f.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up (at most 1/5 of a run)")
    f.add_argument("--label-smoothing", type=float, default=0.1)
    f.add_argument("--bn", choices=("train", "frozen"), default="train", help="BatchNorm: batch stats or frozen")
    f.add_argument("--bn-momentum", type=float, default=0.1, help="running-stat momentum when --bn train")
    f.add_argument("--crop-scale", type=float, nargs=2, default=[0.5, 1.0], help="area fraction of the crop")
    f.add_argument("--crop-ratio", type=float, nargs=2, default=[3 / 4, 4 / 3], help="crop aspect (w/h)")
    f.add_argument("--flip", type=float, default=0.5, help="probability of a horizontal flip")
    f.add_argument("--min-box-keep", type=float, default=0.5, help="else the crop becomes the whole image")
    f.add_argument("--degrade", type=float, default=0.0, help="share of images blurred by a down-up resampling")
    f.add_argument("--degrade-min", type=int, default=32, help="smallest side of that down-sampling")
    f.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on with CUDA")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    f.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="whole-command target in seconds from process start; epochs are cut to fit (0: off)",
    )
    f.add_argument("--grace-s", type=float, default=30.0, help="hard stop at budget + grace (then save)")
    f.add_argument("--reserve-s", type=float, default=10.0, help="kept free for saving")
    f.add_argument("--bench-steps", type=int, default=10, help="steps timed before planning")
    f.add_argument("--plan-share", type=float, default=0.92, help="plan for this share of the time left")
    f.add_argument("--shard-mib", type=float, default=14.0, help="max MiB of tensors per state-dict file")
    f.set_defaults(func=run_finetune)
