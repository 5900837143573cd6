"""Where OpenVINO's resident memory goes: the process's RSS after each stage of loading and first running the
bundled models on OpenVINO's CPU device, as ``app.runtime.create_session`` configures it.

    python -m bench.ov_memory [--models efficientnet_lite0_imagenet ...] [--streams 2] [--cache-dir DIR]

Stages, each printed after ``malloc_trim``: the plugin registered; each model's session created (with its
creation time); each model's first run on one thread, then 2 runs at once (2 threads, as
``LOCSVC_MAX_CONCURRENCY=2``). ``--cache-dir`` sets OpenVINO's ``CACHE_DIR`` (its compiled-model cache): run
twice, the second start reads the cache. Inputs are random (memory does not depend on them). x86-64 with an
Intel CPU only: the plugin offers no device elsewhere.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

from app.runtime import release_free_heap

MODELS = ("imagenet", "tiny_localize", "lsp_pose", "person_box")
REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


def rss_mb() -> float:
    release_free_heap()
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
    ap.add_argument("--streams", type=int, default=2, help="NUM_STREAMS (the service: LOCSVC_MAX_CONCURRENCY)")
    ap.add_argument("--threads", type=int, default=2, help="INFERENCE_NUM_THREADS (the service: intra-op x streams)")
    ap.add_argument("--cache-dir", type=Path, help="OpenVINO's CACHE_DIR (default: no cache)")
    args = ap.parse_args()

    import onnxruntime_ep_openvino as plugin  # type: ignore[import-untyped]

    print(f"{'imported':52s} {rss_mb():7.1f} MB")
    ort.register_execution_provider_library("openvino", plugin.get_library_path())
    devices = [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == "OpenVINOExecutionProvider" and d.ep_metadata.get("ov_device") == "CPU"
    ]
    if not devices:
        raise SystemExit("OpenVINO's plugin offers no CPU device here")
    print(f"{'plugin registered':52s} {rss_mb():7.1f} MB")
    cpu = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(args.threads)}
    cpu["NUM_STREAMS"] = str(args.streams)
    if args.cache_dir:
        cpu["CACHE_DIR"] = str(args.cache_dir)
    sessions = []
    for name in args.models:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.add_provider_for_devices(devices[:1], {"load_config": json.dumps({"CPU": cpu})})
        t0 = time.perf_counter()
        sessions.append(ort.InferenceSession(str(REPO_MODELS / f"{name}.onnx"), so))
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
