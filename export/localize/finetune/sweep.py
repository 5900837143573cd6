"""Alpha of ``E = alpha * E_cls + (1 - alpha) * E_box`` by k-fold cross-validation on the pack, fold-major.

Every alpha of a fold trains from the same initial weights on the same crops (a paired comparison); a sweep cut
short by the budget still compares every alpha on the folds they all finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from export.common.logs import get_logger
from export.localize.finetune.clock import Clock, OutOfTime, Progress
from export.localize.finetune.loop import Data, FinetuneConfig, evaluate, train_run
from export.localize.finetune.planner import used
from export.localize.metrics import chosen_alpha, fmt_metrics, sweep_rows
from export.localize.model import LocalizeNet

log = get_logger(__name__)


@dataclass
class Sweep:
    """The sweep's rows (``localize.report``'s format), the chosen alpha, every run's record, a note, seconds."""

    rows: list[dict[str, Any]]
    best: float
    runs: list[dict[str, Any]]
    note: str
    seconds: float


def cross_validate(
    model: LocalizeNet,
    data: Data,
    init: dict[str, torch.Tensor],
    *,
    folds: list[np.ndarray],
    alphas: list[float],
    epochs: int,
    cfg: FinetuneConfig,
    seed: int,
    default_alpha: float,
    clock: Clock,
    progress: Progress,
    deadline_s: float | None,
) -> Sweep:
    """Train ``epochs`` per (fold, alpha) from ``init`` and score the held-out fold; no run starts whose projected
    end is past ``deadline_s`` (after the first fold).  ``epochs`` 0 or no folds: no run, ``default_alpha``."""
    t0 = time.time()
    n = len(data.labels)
    n_held = max((len(f) for f in folds), default=0)
    n_fit = used(n - min((len(f) for f in folds), default=0), cfg.batch)
    results: dict[float, list[dict[str, float]]] = {a: [] for a in alphas}
    runs: list[dict[str, Any]] = []
    note = ""
    try:
        for f, held in enumerate(folds if epochs else []):
            fit = np.setdiff1d(np.arange(n), held)
            for a in alphas:
                run_s = epochs * n_fit / progress.rate_train + n_held / progress.rate_eval
                if deadline_s is not None and f > 0 and clock.elapsed() + run_s > deadline_s:
                    raise OutOfTime(f"cross-validation past its share of the budget ({deadline_s:.0f}s)")
                model.load_state_dict(init)
                tag = f"cv fold {f + 1}/{len(folds)} alpha {a}"
                fold_seed = seed + 1000 * (f + 1)  # the same crops for every alpha of a fold: a paired comparison
                stats = train_run(
                    model, data, fit, a, epochs, cfg, seed=fold_seed, clock=clock, progress=progress, tag=tag
                )
                te = time.time()
                m = evaluate(model, data, held, cfg)
                progress.done_eval += len(held)
                progress.rate_eval = len(held) / max(time.time() - te, 1e-6)
                results[a].append(m)
                runs.append({"fold": f + 1, "alpha": a, "held_out": m, "epochs": stats})
                log.info(f"  [{tag}] held-out fold: " + fmt_metrics(m))
    except OutOfTime as exc:
        note = f"cross-validation stopped early: {exc}"
        log.info(note)
    rows = sweep_rows(alphas, results)
    best = chosen_alpha(rows, default_alpha)
    seconds = time.time() - t0
    for r in rows:
        folds_txt = ", ".join(f"{v:.4f}" for v in r["folds"])
        log.info(
            f"alpha {r['alpha']}: top-1 loc {r['top1_loc_accuracy_mean']:.4f} +- {r['top1_loc_accuracy_std']:.4f} "
            f"(folds {folds_txt}), top-1 {r['top1_accuracy_mean']:.4f}, mean IoU {r['mean_iou_mean']:.4f}"
        )
    log.info(f"chosen alpha = {best} ({seconds:.0f}s of cross-validation)")
    return Sweep(rows, best, runs, note, seconds)
