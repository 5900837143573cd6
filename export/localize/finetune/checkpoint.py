"""The fine-tuned float32 state dict in ``torch.save`` shards (``--shard-mib``), and loading a result folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from export.common.hashing import sha256_file
from export.localize.finetune.params import build_model
from export.localize.model import LocalizeNet

META_NAME = "localize_finetune.json"
SHARD_STEM = "localize_finetune"
FORMAT = "localize-finetune/1"


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
        files.append({"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path), "keys": len(part)})
    return files


def load_shards(directory: Path, shards: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The state dict written by ``save_shards`` (checks every file's sha256 and that keys do not repeat)."""
    state: dict[str, torch.Tensor] = {}
    for s in shards:
        path = directory / s["file"]
        if sha256_file(path) != s["sha256"]:
            raise ValueError(f"{path}: sha256 differs from {META_NAME}")
        part = torch.load(path, map_location="cpu", weights_only=True)
        if state.keys() & part.keys():
            raise ValueError(f"{path}: keys repeated across shards")
        state.update(part)
    return state


def load_finetuned(directory: Path) -> tuple[dict[str, Any], LocalizeNet]:
    """(metadata, model in eval mode) from a ``localize-finetune`` output folder."""
    meta = json.loads((directory / META_NAME).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory / META_NAME}: format {meta.get('format')!r}, expected {FORMAT!r}")
    cfg = meta["config"]
    model = build_model(cfg["backbone"], cfg["size"], meta["classes"]["wnids"], cfg["seed"])
    model.load_state_dict(load_shards(directory, meta["shards"]), strict=True)
    return meta, model.eval()
