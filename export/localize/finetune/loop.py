"""Training the whole network on device-rendered crops, and evaluating it on the service's exact input."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from export.common.boxes import box_iou
from export.localize.finetune.augment import AugmentConfig, degrade_images, sample_crops
from export.localize.finetune.clock import Clock, Progress
from export.localize.finetune.device import autocast, to_device
from export.localize.finetune.params import param_groups, set_train_mode
from export.localize.finetune.resample import render
from export.localize.losses import box_loss
from export.localize.metrics import localization_metrics
from export.localize.model import BoxHead, LocalizeNet


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
            with autocast(device, cfg.bf16):
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
                iou = box_iou(BoxHead.to_rchw(corners), boxes).sum()
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
        with autocast(device, cfg.bf16):
            lg, corners = model.heads(model.trunk(x))
        logits.append(lg.float()[:k].cpu())
        boxes.append(BoxHead.to_rchw(corners.float())[:k].cpu())
    return torch.cat(logits).numpy(), torch.cat(boxes).numpy()


def evaluate(model: LocalizeNet, data: Data, idx: np.ndarray, cfg: FinetuneConfig) -> dict[str, float]:
    """Localization metrics of images ``idx`` (the service's preprocessing, eval mode)."""
    logits, boxes = predict(model, data, idx, cfg)
    return localization_metrics(logits.argmax(1), boxes, data.labels[idx].numpy(), data.boxes[idx].numpy())
