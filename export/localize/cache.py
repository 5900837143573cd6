"""Cache the frozen trunk's output once per image (float16 .npy, resumable) for fast head training."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from export.common.logs import get_logger
from export.common.onnx_export import export_onnx
from export.common.onnx_run import ort_session
from export.localize.data import Sample, load_image

log = get_logger(__name__)


def cache_key(
    tag: str, samples: list[Sample], size: tuple[int, int], pre_resize: tuple[int, int] | None, flip: bool
) -> str:
    """A short hash of everything the cached tensor depends on."""
    doc = {
        "tag": tag,
        "size": list(size),
        "pre_resize": list(pre_resize) if pre_resize else None,
        "flip": flip,
        "paths": [str(s.path) for s in samples],
    }
    return hashlib.sha1(json.dumps(doc).encode()).hexdigest()[:16]


def _load_batch(
    samples: list[Sample], size: tuple[int, int], pre_resize: tuple[int, int] | None, flip: bool
) -> np.ndarray:
    return np.stack([load_image(s.path, size, pre_resize, flip) for s in samples])


def onnx_runner(module: nn.Module, size: tuple[int, int], workdir: Path) -> Callable[[np.ndarray], np.ndarray]:
    """``module`` exported to ONNX in ``workdir`` and run by onnxruntime, faster than PyTorch's eager CPU run
    (EfficientNet-Lite0's trunk at 224 on the shared 2 cores, another job running: 60-78 against 27 images/s)."""
    path = workdir / "trunk.onnx"
    export_onnx(module.eval(), ["out"], size, path)
    session = ort_session(path)

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(["out"], {"image": x})[0]
        return out

    return run


def cache_trunk(
    trunk: nn.Module,
    samples: list[Sample],
    size: tuple[int, int],
    pre_resize: tuple[int, int] | None,
    out: Path,
    *,
    flip: bool = False,
    batch: int = 50,
    desc: str = "trunk",
) -> np.ndarray:
    """Run ``trunk`` on every sample (preprocessed like the service) and keep float16 outputs.

    Written to ``out`` (an .npy) through a memory map; an interrupted run resumes where the
    ``.progress`` file says it stopped.  Returns the array (memory-mapped, read-only).
    """
    if out.exists():
        cached: np.ndarray = np.load(out, mmap_mode="r")
        return cached
    out.parent.mkdir(parents=True, exist_ok=True)
    partial, progress = out.with_suffix(".partial.npy"), out.with_suffix(".progress")
    tmp = tempfile.TemporaryDirectory()
    run = onnx_runner(trunk, size, Path(tmp.name))
    shape = tuple(run(_load_batch(samples[:1], size, pre_resize, flip)).shape[1:])
    done = int(progress.read_text()) if progress.exists() and partial.exists() else 0
    mode = "r+" if done else "w+"
    arr = np.lib.format.open_memmap(partial, mode=mode, dtype=np.float16, shape=(len(samples), *shape))
    t0, last = time.time(), 0.0
    for start in range(done, len(samples), batch):
        chunk = samples[start : start + batch]
        arr[start : start + len(chunk)] = run(_load_batch(chunk, size, pre_resize, flip))
        n = start + len(chunk)
        if time.time() - last > 30 or n == len(samples):
            arr.flush()
            progress.write_text(str(n))
            last = time.time()
            rate = (n - done) / max(1e-6, last - t0)
            eta = (len(samples) - n) / max(rate, 1e-6)
            log.info(f"  [{desc}] {n}/{len(samples)} images, {rate:.1f} img/s, eta {eta / 60:.1f} min")
    tmp.cleanup()
    arr.flush()
    del arr
    partial.rename(out)
    progress.unlink(missing_ok=True)
    result: np.ndarray = np.load(out, mmap_mode="r")
    return result


def cached_split(
    tag: str,
    trunk: nn.Module,
    samples: list[Sample],
    size: tuple[int, int],
    pre_resize: tuple[int, int] | None,
    *,
    cache_dir: Path,
    split: str,
    flip: bool = False,
) -> np.ndarray:
    """``cache_trunk`` into ``cache_dir/<tag>-<split>-<key>.npy`` (the key hashes the inputs)."""
    key = cache_key(tag, samples, size, pre_resize, flip)
    name = f"{tag}-{split}{'-flip' if flip else ''}-{key}.npy"
    return cache_trunk(
        trunk, samples, size, pre_resize, cache_dir / name, flip=flip, desc=f"{split}{' flip' if flip else ''}"
    )
