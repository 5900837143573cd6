"""Train the shared tail + both heads on cached trunk outputs (``localize``); k-fold sweep of alpha."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.common.boxes import flip_box
from export.common.logs import get_logger
from export.localize.losses import box_loss
from export.localize.metrics import fmt_metrics, fold_summary, localization_metrics, stratified_folds
from export.localize.model import BoxHead, LocalizeNet

log = get_logger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one head-training run (the same for every alpha and fold)."""

    epochs: int = 8
    batch: int = 256
    lr: float = 2e-3
    tail_lr: float = 2e-4
    fc_lr: float | None = None  # the classification head's rate (None: ``lr``; 0: kept as initialized)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    seed: int = 0
    bf16: bool = True
    log: Callable[[str], None] = field(default=log.info)


@dataclass
class Split:
    """Cached trunk outputs (float16) with labels and ``rchw_norm`` boxes.

    ``flipped`` optionally holds the trunk outputs of the mirrored images (same order):
    training then uses both, with mirrored boxes.
    """

    feats: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    flipped: np.ndarray | None = None

    def subset(self, idx: np.ndarray) -> Split:
        flipped = None if self.flipped is None else self.flipped[idx]
        return Split(self.feats[idx], self.labels[idx], self.boxes[idx], flipped)

    def training_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensors to train on: originals plus mirrored copies when available."""
        feats, labels, boxes = [self.feats], [self.labels], [self.boxes]
        if self.flipped is not None:
            feats.append(self.flipped)
            labels.append(self.labels)
            boxes.append(flip_box(self.boxes))
        return (
            torch.from_numpy(np.concatenate([np.asarray(f) for f in feats])),
            torch.from_numpy(np.concatenate(labels)),
            torch.from_numpy(np.concatenate(boxes).astype(np.float32)),
        )


def _set_train_mode(model: LocalizeNet) -> None:
    """Dropout on; every BatchNorm keeps its running statistics (the tail's BN is fine-tuned affinely)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    model.trunk.eval()


def trainable_state(model: LocalizeNet) -> dict[str, torch.Tensor]:
    """A copy of everything head training changes (tail, fc, box head)."""
    return copy.deepcopy({k: v for k, v in model.state_dict().items() if not k.startswith("trunk.")})


def train_heads(model: LocalizeNet, data: Split, alpha: float, cfg: TrainConfig, tag: str = "") -> float:
    """Minimize ``alpha * CE + (1 - alpha) * E_box`` over tail + heads; returns wall seconds."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    feats, labels, boxes = data.training_arrays()
    n = len(labels)
    steps_per_epoch = math.ceil(n / cfg.batch)
    total = cfg.epochs * steps_per_epoch
    fc_lr = cfg.lr if cfg.fc_lr is None else cfg.fc_lr
    groups = [
        {"params": list(model.box_head.parameters()), "lr": cfg.lr},
        {"params": list(model.tail.parameters()), "lr": cfg.tail_lr},
    ]
    if fc_lr > 0:
        groups.append({"params": list(model.fc.parameters()), "lr": fc_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    base = [g["lr"] for g in opt.param_groups]
    warmup = max(1, total // 20)
    t0, step = time.time(), 0
    for epoch in range(cfg.epochs):
        _set_train_mode(model)
        perm = torch.randperm(n, generator=gen)
        sums = np.zeros(3)
        for start in range(0, n, cfg.batch):
            idx = perm[start : start + cfg.batch]
            scale = 0.5 * (1 + math.cos(math.pi * step / total)) * min(1.0, (step + 1) / warmup)
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = lr * scale
            x = feats[idx].float().contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits, corners = model.heads(x)
            e_cls = F.cross_entropy(logits.float(), labels[idx], label_smoothing=cfg.label_smoothing)
            e_box = box_loss(corners.float(), boxes[idx])
            loss = alpha * e_cls + (1 - alpha) * e_box
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sums += [float(t.detach()) * len(idx) for t in (loss, e_cls, e_box)]
            step += 1
        sums /= n
        cfg.log(
            f"  {tag}epoch {epoch + 1}/{cfg.epochs}: loss {sums[0]:.4f} "
            f"(cls {sums[1]:.4f}, box {sums[2]:.4f}), {time.time() - t0:.0f}s"
        )
    model.eval()
    return time.time() - t0


def predict(model: LocalizeNet, feats: np.ndarray, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(logits, boxes) from cached trunk outputs, in eval mode."""
    model.eval()
    logits, boxes = [], []
    with torch.inference_mode():
        for start in range(0, len(feats), batch):
            lg, corners = model.heads(torch.from_numpy(np.array(feats[start : start + batch], dtype=np.float32)))
            logits.append(lg.numpy())
            boxes.append(BoxHead.to_rchw(corners).numpy())
    return np.concatenate(logits), np.concatenate(boxes)


def evaluate(model: LocalizeNet, data: Split) -> dict[str, float]:
    """Localization metrics of ``model`` on a cached split."""
    logits, boxes = predict(model, data.feats)
    return localization_metrics(logits.argmax(1), boxes, data.labels, data.boxes)


def sweep_alpha(
    model: LocalizeNet,
    data: Split,
    alphas: Sequence[float],
    k: int,
    cfg: TrainConfig,
    *,
    metric: str = "top1_loc_accuracy",
) -> list[dict[str, Any]]:
    """k-fold cross-validation of alpha on ``data`` (the training set); the model is restored after."""
    init = trainable_state(model)
    folds = stratified_folds(data.labels, k, cfg.seed)
    rows: list[dict[str, Any]] = []
    for alpha in alphas:
        per_fold: list[dict[str, float]] = []
        for f, held in enumerate(folds):
            train_idx = np.setdiff1d(np.arange(len(data.labels)), held)
            model.load_state_dict(init, strict=False)
            train_heads(model, data.subset(train_idx), alpha, cfg, tag=f"alpha={alpha} fold {f + 1}/{k} ")
            m = evaluate(model, data.subset(held))
            per_fold.append(m)
            cfg.log(f"  alpha={alpha} fold {f + 1}/{k}: " + fmt_metrics(m))
        row = fold_summary(alpha, per_fold, metric)
        rows.append(row)
        cfg.log(f"alpha={alpha}: {metric} {row[f'{metric}_mean']:.4f} +- {row[f'{metric}_std']:.4f}")
    model.load_state_dict(init, strict=False)
    return rows
