"""Running an exported file through onnxruntime on the CPU, as the service does (one place for sessions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def ort_session(path: Path, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` on ``path``; ``threads`` sets the intra-op pool (``None``: onnxruntime's)."""
    import onnxruntime as ort

    options = None
    if threads is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(
    path: Path, batches: Iterable[np.ndarray], outputs: Sequence[str], threads: int | None = None
) -> list[np.ndarray]:
    """The named ``outputs`` of the model on each input batch (fed as ``image``), concatenated over the batches."""
    sess = ort_session(path, threads)
    parts: list[list[np.ndarray]] = [[] for _ in outputs]
    for x in batches:
        for part, y in zip(parts, sess.run(list(outputs), {"image": x}), strict=True):
            part.append(y)
    return [np.concatenate(p) for p in parts]
