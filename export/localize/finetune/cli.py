"""End-to-end fine-tuning of the localization network (trunk included), built to run on one GPU.

Two sub-commands (``docs/localize.md``, "Method" and "Reproduce"):

* ``python -m export localize-pack --data DIR --out .devdata/tiny_train.npz``: the 20,000 Tiny ImageNet training
  images as their raw JPEG bytes (no re-encoding) + labels (``wnids.txt`` order) + ``rchw_norm`` boxes
  (``export.common.boxes``' convention) in one ``.npz`` that travels to a GPU machine;
* ``python -m export localize-finetune --pack PACK --device cuda --out-dir DIR``: decode every image once into a
  uint8 tensor on the device, choose alpha of ``E = alpha * E_cls + (1 - alpha) * E_box`` by k-fold
  cross-validation on the pack (metric: top-1 localization accuracy of the held-out fold), then train the whole
  network (trunk, tail, heads) on all images with that alpha, with a fresh random-resized crop + flip of every
  image at every step (done on the device, boxes transformed alike).  Writes the float32 state dict in shards
  (``--shard-mib``) and ``localize_finetune.json`` (sweep, chosen alpha, config, plan, timings, per-epoch stats).
  ``python -m export localize --from-finetune DIR`` exports and evaluates the result.

These modules import only torch, numpy, Pillow and export modules that import only those, so they run on a bare
GPU machine (``EFFICIENTNET_LITE0_WEIGHTS`` names a copy of the ImageNet state dict there).

Input pixels are computed on the device with Pillow's own fixed-point bilinear arithmetic (``resample``):
evaluation input is bit-identical to the service's (64x64 image -> ``Image.resize`` to ``size`` ->
``(x / 255 - 0.5) / 0.5``), and a training crop is bit-identical to ``Image.resize(size, box=crop)`` (+ mirror),
so crop = whole image is exactly the evaluation input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from export.common.logs import get_logger
from export.localize.data import add_dataset_arguments, load_dataset
from export.localize.finetune.pack import decode_image, load_pack, pack_samples, pack_tiny_imagenet
from export.localize.finetune.resample import resize_check
from export.localize.finetune.run import run_finetune

log = get_logger(__name__)


def run_pack(args: argparse.Namespace) -> None:
    """``localize-pack``: the training part of the dataset (the same split as ``localize``) as one ``.npz``."""
    t0 = time.time()
    pre = (int(args.pre_resize[0]), int(args.pre_resize[1]))
    if min(pre) < 1:
        raise SystemExit("--pre-resize must be positive: the device holds every image at that size")
    if args.data_csv is not None:
        ds = load_dataset(args)
        info = pack_samples(ds.train, ds.labels, args.out, pre, f"{ds.source}, training part")
    elif args.data is not None:
        info = pack_tiny_imagenet(args.data, args.out, pre)
    else:
        raise SystemExit("give --data DIR (Tiny ImageNet layout) or --data-csv FILE")
    log.info(f"wrote {args.out}: {info} in {time.time() - t0:.1f}s")
    if args.check > 0:
        pack = load_pack(args.out)
        imgs = np.stack([decode_image(pack.blob(i), pack.pre_resize) for i in range(min(args.check, len(pack)))])
        log.info(
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
