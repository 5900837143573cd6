"""The sidecar JSON written beside each ``.onnx``: the only contract between ``export/`` and ``app/``.

Schema (version 1)::

    {
      "schema_version": 1,
      "name": "efficientnet_lite0_imagenet",      # unique model name, used in the API
      "task": "cam" | "localize" | "pose",
      "file": "efficientnet_lite0_imagenet.onnx",  # relative to the sidecar
      "sha256": "<hex of the .onnx>",
      "input": {"name": "image", "layout": "NCHW", "height": 224, "width": 224, "channels": "RGB",
                "fit": "stretch" | "letterbox",    # how an image is fitted to the input
                "pre_resize": null | [h, w],      # optional: resize to this first (match training data)
                "resample": "bilinear"},
      "normalization": {"scale": 0.00392156862745098, "mean": [..3], "std": [..3]},
                                                   # x = (pixel * scale - mean) / std
      "outputs": {"features": "...", "pooled": "...", "logits": "...",
                  "cam_weight": "...", "cam_bias": "...",
                  "box": "..." (localize), "joints": "..." (pose), "joint_visibility": "..." (pose, optional)},
      "box_format": "rchw_norm",                   # localize: (row, col, height, width) / image size
      "labels": [{"index": 0, "id": "n01440764", "name": "tench"}, ...],
      "joints": {"names": [...], "edges": [[i, j], ...], "coords": "xy_norm_box"},   # pose
      "provenance": {"weights": ..., "data": ..., "date": ..., "command": ..., "exporter": ...},
      "metrics": {...},                            # measured, with the command that measured them
      "verification": {...}                        # export-time checks (max abs diffs, CAM identity)
    }
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from export.common.hashing import sha256_file
from export.common.paths import IMAGENET_LABELS

SCHEMA_VERSION = 1


def imagenet_labels() -> list[dict[str, Any]]:
    """ImageNet-1k labels (index, WordNet id, name) from the bundled offline list."""
    out: list[dict[str, Any]] = []
    for line in IMAGENET_LABELS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        idx, wnid, lemma = line.split("\t")
        out.append({"index": int(idx), "id": wnid, "name": lemma.split(",")[0].strip(), "aliases": lemma})
    if len(out) != 1000:
        raise RuntimeError(f"{IMAGENET_LABELS} has {len(out)} labels, expected 1000")
    return out


def provenance(weights: str, data: str, **extra: Any) -> dict[str, Any]:
    """Where the weights and data came from, when, by which command and exporter (``extra`` appended)."""
    import torch

    return {
        "weights": weights,
        "data": data,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m export " + shlex.join(sys.argv[1:]),
        "exporter": f"torch {torch.__version__} (torch.onnx, TorchScript exporter)",
        **extra,
    }


def stretch_input(size: int, pre_resize: tuple[int, int] | list[int] | None = None) -> dict[str, Any]:
    """The sidecar's ``input`` block of a square NCHW RGB model fed by a bilinear stretch (+ optional pre-resize)."""
    return {
        "name": "image",
        "layout": "NCHW",
        "height": size,
        "width": size,
        "channels": "RGB",
        "fit": "stretch",
        "pre_resize": list(pre_resize) if pre_resize else None,
        "resample": "bilinear",
    }


def write_sidecar(onnx_path: Path, meta: dict[str, Any]) -> Path:
    """Write ``<model>.json`` beside ``onnx_path`` with the file name and sha256 filled in."""
    required = {"name", "task", "input", "normalization", "outputs", "labels", "provenance"}
    missing = required - meta.keys()
    if missing:
        raise ValueError(f"sidecar is missing {sorted(missing)}")
    doc = {"schema_version": SCHEMA_VERSION, **meta, "file": onnx_path.name, "sha256": sha256_file(onnx_path)}
    out = onnx_path.with_suffix(".json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out
