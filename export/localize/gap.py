"""``python -m export.localize.gap MODEL.onnx [--n 1000]``: how a /localize model reacts to the resampling chain.

Users send photos of hundreds of pixels; the service brings them to the training resolution with the sidecar's
``pre_resize`` (64x64, Pillow bilinear, antialiased) before the 160x160 stretch.  Tiny ImageNet has no such
photos, so this probe uses its val images and varies only the chain in front of the network: the native 64-px
file (the training input), and the file upscaled 4x (bicubic) and then brought to the network through several
down-sampling filters, or through none (straight to 160).  A model that only works on the exact native pixels
loses accuracy on every other chain; the row ``up4_bicubic->pre64_bilinear`` is what the service does to a
photo.  Prints one line of metrics per chain, on the first ``--n`` val images, through onnxruntime.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from export.common.onnx_run import ort_session
from export.common.paths import SHARED_DATA
from export.localize.data import boxes_of, labels_of, preprocess, read_tiny_imagenet
from export.localize.metrics import localization_metrics

R = Image.Resampling
CHAINS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "native64": lambda im: im,
    "up4_bicubic->pre64_bilinear": lambda im: im.resize((256, 256), R.BICUBIC).resize((64, 64), R.BILINEAR),
    "up4_bicubic->no_pre": lambda im: im.resize((256, 256), R.BICUBIC),
    "up4_bicubic->pre64_lanczos": lambda im: im.resize((256, 256), R.BICUBIC).resize((64, 64), R.LANCZOS),
    "up4_bicubic->pre64_bicubic": lambda im: im.resize((256, 256), R.BICUBIC).resize((64, 64), R.BICUBIC),
    "up4_bicubic->pre64_box": lambda im: im.resize((256, 256), R.BICUBIC).resize((64, 64), R.BOX),
}


def probe(model: Path, data: Path, n: int, size: int = 160) -> dict[str, dict[str, float]]:
    """Metrics of ``model`` on the first ``n`` val images for each resampling chain."""
    _, val, _ = read_tiny_imagenet(data)
    val = val[:n]
    labels, gt_boxes = labels_of(val), boxes_of(val)
    sess = ort_session(model, threads=2)
    out: dict[str, dict[str, float]] = {}
    for name, chain in CHAINS.items():
        preds, boxes = [], []
        for s in val:
            with Image.open(s.path) as im:
                # the chain replaces the pre-resize; then the service's stretch + normalization
                x = preprocess(chain(im.convert("RGB")), (size, size), None)[None]
            logits, box = sess.run(["logits", "box"], {"image": x})
            preds.append(int(logits[0].argmax()))
            boxes.append(box[0])
        m = localization_metrics(np.array(preds), np.array(boxes), labels, gt_boxes)
        out[name] = {k: round(float(v), 4) for k, v in m.items()}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    """``python -m export.localize.gap``."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=SHARED_DATA / "tiny_imagenet_200")
    p.add_argument("--n", type=int, default=1000, help="first N val images")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args()
    res = probe(a.model, a.data, a.n)
    if a.json:
        a.json.write_text(json.dumps({"model": str(a.model), "n": a.n, "chains": res}, indent=2))


if __name__ == "__main__":
    main()
