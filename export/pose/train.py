"""Training the pose network: the augmented sample stream, loss, optimizer and schedule, loop and checkpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.common.efficientnet_lite import load_pretrained
from export.common.logs import get_logger
from export.pose.data import (
    LSP_TOTAL,
    LSP_TRAIN_IMAGES,
    AugmentConfig,
    PoseSample,
    lsp_samples,
    lspet_samples,
    make_training_example,
)
from export.pose.evaluate import predict_torch, summarize, to_pixels, val_inputs
from export.pose.model import PoseNet

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the data and the seed)."""

    size: int = 160
    steps: int = 1700
    batch: int = 32
    lr: float = 1e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup: int = 100
    frozen_blocks: int = 5
    width: int = 64
    lsp_repeat: int = 3
    vis_weight: float = 0.1
    seed: int = 0
    time_budget_min: float = 0.0


# Backbone tensors never trained or used by PoseNet (the classifier tail): left out of checkpoints.
UNUSED_PREFIXES = ("backbone._conv_head.", "backbone._bn1.", "backbone._fc.")


class TrainStream(torch.utils.data.Dataset[tuple[np.ndarray, ...]]):
    """Item ``k`` of the training stream: sample ``order[k]`` with augmentation seeded by ``(seed, k)``."""

    def __init__(self, samples: list[PoseSample], order: np.ndarray, size: int, seed: int) -> None:
        self.samples, self.order, self.size, self.seed = samples, order, size, seed
        self.cfg = AugmentConfig()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([self.seed, k])
        return make_training_example(self.samples[int(self.order[k])], rng, self.size, self.cfg)


def training_samples(data: Path, lsp_repeat: int) -> list[PoseSample]:
    """LSP images 1-800 (repeated ``lsp_repeat`` times: cleaner, test-like) + LSPET people (>= 10 joints).

    ``data`` holds ``lsp_train/`` and ``lspet/`` as shipped, or a pack's ``lspet_crops/`` (``pose-pack``).
    """
    lsp = lsp_samples(data / "lsp_train", range(LSP_TRAIN_IMAGES))
    lspet = data / "lspet_crops" if (data / "lspet_crops" / "samples.json").exists() else data / "lspet"
    return lsp * lsp_repeat + lspet_samples(lspet)


def stream_order(n_samples: int, n_items: int, seed: int) -> np.ndarray:
    """Concatenated per-epoch permutations, cut to ``n_items``."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(n_items / n_samples)
    return np.concatenate([rng.permutation(n_samples) for _ in range(epochs)])[:n_items]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over annotated joints' coordinates; pred/target (N, 14, 2), mask (N, 14)."""
    err = (pred - target).abs().sum(dim=-1) * mask
    return err.sum() / mask.sum().clamp(min=1.0) / 2


def build_model(cfg: TrainConfig) -> PoseNet:
    torch.manual_seed(cfg.seed)
    return PoseNet(load_pretrained(), width=cfg.width, frozen_blocks=cfg.frozen_blocks)


def make_optimizer(
    net: PoseNet, cfg: TrainConfig, progress: Callable[[], float] | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (backbone at a lower rate), linear warm-up then cosine decay to 0.

    ``progress()`` (in [0, 1]) replaces ``step / steps`` in the cosine when given: a wall-clock schedule.
    """
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in net.backbone.parameters()}
    head = [p for p in net.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.backbone_lr}, {"params": head, "lr": cfg.lr}], weight_decay=cfg.weight_decay
    )

    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        frac = progress() if progress else (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def save_checkpoint(net: PoseNet, cfg: TrainConfig, seconds: float, steps_done: int, path: Path) -> None:
    """The trained tensors (float32, on CPU) without the unused classifier tail (keeps the file < 16 MB)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items() if not k.startswith(UNUSED_PREFIXES)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"config": cfg.__dict__, "state_dict": state, "seconds": seconds, "steps_done": steps_done}, tmp)
    tmp.replace(path)


def train(
    cfg: TrainConfig, data: Path, checkpoint: Path, eval_every: int, threads: int, device: str = "cpu", workers: int = 1
) -> dict[str, Any]:
    """Train, log progress and validation PCP, save ``checkpoint``; returns training statistics.

    With ``cfg.time_budget_min`` > 0 the cosine schedule runs on wall-clock time and training stops when the
    budget is spent (``cfg.steps`` is then only an upper bound); the steps actually done are recorded.
    On CUDA the forward/backward pass runs under bf16 autocast in channels-last layout.
    """
    torch.set_num_threads(threads)
    np.random.seed(cfg.seed)
    samples = training_samples(data, cfg.lsp_repeat)
    val = lsp_samples(data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    vx, vboxes, vgt, vmask = val_inputs(val, cfg.size)
    order = stream_order(len(samples), cfg.steps * cfg.batch, cfg.seed)
    stream = TrainStream(samples, order, cfg.size, cfg.seed)
    cuda = device.startswith("cuda")
    loader = torch.utils.data.DataLoader(
        stream, batch_size=cfg.batch, num_workers=workers, prefetch_factor=4, pin_memory=cuda, drop_last=True
    )
    net = build_model(cfg).to(device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    budget = cfg.time_budget_min * 60.0
    t0 = time.time()

    def progress() -> float:
        return (time.time() - t0) / budget

    opt, sched = make_optimizer(net, cfg, progress if budget > 0 else None)
    log.info(
        f"training on {len(samples)} samples ({len(order)} draws max, {len(order) / len(samples):.2f} epochs), "
        f"device {device}, {workers} loader workers, budget {cfg.time_budget_min} min"
    )
    history: list[dict[str, Any]] = []
    done = 0
    last_save = time.time()
    net.train()
    for step, batch in enumerate(loader):
        img, uv, mask, vis = (t.to(device, non_blocking=True) for t in batch)
        if cuda:
            img = img.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            joints, vis_logit = net(img)
        loss_xy = masked_l1(joints.float().reshape(-1, 14, 2), uv, mask)
        loss_vis = nn.functional.binary_cross_entropy_with_logits(vis_logit.float(), vis)
        loss = loss_xy + cfg.vis_weight * loss_vis
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        done = step + 1
        out_of_time = budget > 0 and progress() >= 1.0
        if done % 50 == 0 or done == cfg.steps or out_of_time:
            el = time.time() - t0
            left = budget - el if budget > 0 else el / done * (cfg.steps - done)
            log.info(
                f"step {done}/{cfg.steps} l1 {loss_xy.item():.4f} vis {loss_vis.item():.3f} "
                f"lr {sched.get_last_lr()[1]:.2e} {done * cfg.batch / el:.1f} img/s "
                f"elapsed {el / 60:.1f} min left {left / 60:.1f} min"
            )
        if done % eval_every == 0 or done == cfg.steps or out_of_time:
            res = summarize(to_pixels(predict_torch(net, vx, device=device), vboxes), vgt, vmask)
            history.append(
                {
                    "step": done,
                    "minutes": round((time.time() - t0) / 60, 2),
                    "pcp": res["pcp"],
                    "pck@0.2": res["pck@0.2"],
                }
            )
            log.info(f"  val step {done}: PCP {res['pcp']} PCK@0.2 {res['pck@0.2']}")
            net.train()
        if time.time() - last_save > 120:  # a checkpoint survives a run cut short by a time limit
            save_checkpoint(net, cfg, time.time() - t0, done, checkpoint)
            last_save = time.time()
        if out_of_time:
            break
    seconds = time.time() - t0
    save_checkpoint(net, cfg, seconds, done, checkpoint)
    epochs = done * cfg.batch / len(samples)
    return {
        "seconds": round(seconds, 1),
        "samples": len(samples),
        "steps_done": done,
        "epochs": round(epochs, 2),
        "device": device,
        "history": history,
    }


def load_checkpoint(path: Path) -> tuple[PoseNet, TrainConfig, float]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ck["config"])
    net = PoseNet(load_pretrained(), width=cfg.width, frozen_blocks=cfg.frozen_blocks)
    missing, unexpected = net.load_state_dict(ck["state_dict"], strict=False)
    stray = [k for k in missing if not k.startswith(UNUSED_PREFIXES)]
    if stray or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit PoseNet (missing {stray}, unexpected {unexpected})")
    return net.eval(), cfg, float(ck["seconds"])
