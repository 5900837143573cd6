"""Where OpenVINO's resident memory goes: the process's RSS after each stage of loading and first running the
bundled models on OpenVINO's CPU device, each session made by the service's ``app.runtime.create_session``
(``LOCSVC_EXECUTION_PROVIDER=openvino``, the other settings at their defaults and ``--streams`` as
``LOCSVC_MAX_CONCURRENCY``).

    python -m bench.ov_memory [--models efficientnet_lite0_imagenet ...] [--streams 2] [--cache-dir DIR]

Stages, each printed after ``malloc_trim``: the plugin registered; each model's session created (with its
creation time); each model's first run on one thread, then 2 runs at once (2 threads, as
``LOCSVC_MAX_CONCURRENCY=2``). ``--cache-dir`` is ``LOCSVC_OPENVINO_CACHE_DIR`` (OpenVINO's compiled-model
cache): run twice, the second start reads the cache. Inputs are random (memory does not depend on them). x86-64
with an Intel CPU only: the plugin offers no device elsewhere.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from app import runtime
from app.config import REPO_MODELS, Settings

MODELS = ("imagenet", "tiny_localize", "lsp_pose", "person_box")


def rss_mb() -> float:
    runtime.release_free_heap()
    return float(psutil.Process().memory_info().rss) / 2**20


def run(session: ort.InferenceSession, times: int = 3) -> None:
    feed = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(times):
        session.run(None, {feed.name: x})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[f"efficientnet_lite0_{m}" for m in MODELS])
    ap.add_argument("--streams", type=int, default=2, help="LOCSVC_MAX_CONCURRENCY: OpenVINO's NUM_STREAMS")
    ap.add_argument("--cache-dir", type=Path, help="LOCSVC_OPENVINO_CACHE_DIR (default: none, as the service's)")
    args = ap.parse_args()
    settings = Settings(execution_provider="openvino", max_concurrency=args.streams, openvino_cache_dir=args.cache_dir)

    print(f"{'imported':52s} {rss_mb():7.1f} MB")
    runtime.resolve_provider(settings)  # registers the plugin; ProviderError where it offers no device
    print(f"{'plugin registered':52s} {rss_mb():7.1f} MB")
    sessions = []
    for name in args.models:
        t0 = time.perf_counter()
        sessions.append(runtime.create_session(REPO_MODELS / f"{name}.onnx", settings))
        print(f"{name + f' created ({time.perf_counter() - t0:.2f} s)':52s} {rss_mb():7.1f} MB")
    for name, session in zip(args.models, sessions, strict=True):
        run(session)
        print(f"{name + ': first runs, 1 thread':52s} {rss_mb():7.1f} MB")
        threads = [threading.Thread(target=run, args=(session,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{name + ': 2 runs at once':52s} {rss_mb():7.1f} MB")


if __name__ == "__main__":
    main()
