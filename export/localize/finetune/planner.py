"""Fitting the run into its wall-clock budget: measured speeds -> epochs of cross-validation and final training."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np

from export.localize.finetune.clock import Clock, Progress
from export.localize.finetune.device import sync
from export.localize.finetune.loop import Data, FinetuneConfig, predict, train_run
from export.localize.model import LocalizeNet


@dataclass
class Plan:
    """Epochs of each cross-validation run and of the final training, the projected seconds, and why."""

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
    sync(data.images.device)
    sub = idx[: min(n, cfg.batch * steps)]
    t0 = time.time()
    train_run(probe, data, sub, 0.5, 1, cfg, seed=1, clock=Clock(None), progress=sink, tag="bench")
    sync(data.images.device)
    rate_train = (len(sub) // min(cfg.batch, len(sub))) * min(cfg.batch, len(sub)) / (time.time() - t0)
    sub = idx[: min(n, cfg.eval_batch)]
    predict(probe, data, sub, cfg)
    sync(data.images.device)
    sub = idx[: min(n, cfg.eval_batch * 2)]
    t0 = time.time()
    predict(probe, data, sub, cfg)
    sync(data.images.device)
    rate_eval = len(sub) / (time.time() - t0)
    del probe
    return rate_train, rate_eval


def used(n: int, batch: int) -> int:
    """Images one epoch of ``train_run`` sees (``drop_last``)."""
    b = min(batch, n)
    return n // b * b if n else 0
