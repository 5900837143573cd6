"""Sizing measurements behind docs/scaling.md (no Docker needed).

    . .venv/bin/activate && python deploy/measure.py            # --duration 15 --concurrency 4

For LOCSVC_INTRA_OP_THREADS = 1 and 2, one server (every model in models/) on a loopback port takes a
closed-loop /cam load of the cat image (scikit-image's chelsea, 451x300 JPEG) through bench.loadgen; per run:
throughput and latency, the CPU-seconds the server process used per request (/proc/PID/stat), and its
VmRSS afterwards. Then the worst case for memory: two 7000x7000 PNGs (49 MP, under LOCSVC_MAX_IMAGE_PIXELS)
at once with overlay=true, read as the process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import run_load  # noqa: E402
from bench.perf import start_service  # noqa: E402


def proc_status(pid: int, key: str) -> float:
    """A /proc/PID/status memory field (VmRSS, VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cat_jpeg() -> bytes:
    import skimage.data

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def huge_png(side: int = 7000) -> bytes:
    y, x = np.mgrid[0:side, 0:side]
    img = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)  # smooth: a small file
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def measure(threads: int, image: bytes, duration: float, concurrency: int) -> dict[str, Any]:
    log = Path(tempfile.mkdtemp(prefix="locsvc-measure-")) / "server.log"
    server = start_service({"LOCSVC_INTRA_OP_THREADS": str(threads), "LOCSVC_LOG_LEVEL": "WARNING"}, 1, log)
    proc, url = server.proc, server.url
    try:
        rss_ready = proc_status(proc.pid, "VmRSS")
        c0 = cpu_seconds(proc.pid)
        s = asyncio.run(run_load(url, "/cam", image, concurrency, duration)).summary()
        cpu = cpu_seconds(proc.pid) - c0
        out: dict[str, Any] = {
            "intra_op_threads": threads,
            **{
                k: s[k]
                for k in ("concurrency", "ok", "throughput_rps", "p50_ms", "p95_ms", "statuses", "transport_errors")
            },
            "server_cpu_s": round(cpu, 2),
            "cpu_s_per_request": round(cpu / max(s["ok"], 1), 4),
            "rps_per_busy_core": round(s["ok"] / cpu, 1) if cpu else None,
            "rss_mib_ready": round(rss_ready, 1),
            "rss_mib_after_load": round(proc_status(proc.pid, "VmRSS"), 1),
        }
        if threads == 1:
            big = huge_png()
            r = asyncio.run(run_load(url, "/cam", big, 2, 60, params={"overlay": "true"}, max_requests=2))
            out["worst_case"] = {
                "png_mb": round(len(big) / 1e6, 2),
                "statuses": dict(r.statuses),
                "peak_rss_mib": round(proc_status(proc.pid, "VmHWM"), 1),
            }
        return out
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    print(json.dumps({"cores": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}))
    image = cat_jpeg()
    for threads in (1, 2):
        print(json.dumps(measure(threads, image, args.duration, args.concurrency)), flush=True)
    print(json.dumps({"loadavg_after": Path("/proc/loadavg").read_text().split()[:3]}))


if __name__ == "__main__":
    main()
