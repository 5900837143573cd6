"""Soak: hold the service at saturation for minutes; report errors and memory over time.

    python -m bench.soak --minutes 3 --concurrency 8      # starts its own server on a loopback port

The server it starts gets the ``LOCSVC_*`` of the environment, ``LOCSVC_MAX_QUEUE`` from ``--max-queue``.

Errors are every answer that is neither 200 nor a deliberate 503 (overload), plus transport errors.
RSS of the server process is sampled every few seconds: it should stay flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import httpx

from bench.loadgen import run_load
from bench.photos import photo_jpeg
from bench.server import ROOT, Server, environ_settings, rss_mb


async def soak(url: str, pid: int | None, minutes: float, concurrency: int, window_s: float) -> dict[str, Any]:
    images = {"small": photo_jpeg(640, 480), "large": photo_jpeg(4000, 3000)}
    served = sorted({p for m in httpx.get(f"{url}/models").json() for p in m["serves"]})
    samples: list[dict[str, Any]] = []
    totals: dict[str, int] = {"requests": 0, "ok": 0, "overload_503": 0, "errors": 0}
    end = time.monotonic() + minutes * 60
    rng = random.Random(0)
    while time.monotonic() < end:
        ep = rng.choice(served)
        img = rng.choice(list(images))
        res = await run_load(url, ep, images[img], concurrency, min(window_s, max(1.0, end - time.monotonic())))
        s = res.summary()
        errors = sum(v for k, v in res.statuses.items() if k not in (200, 503)) + res.transport_errors
        totals["requests"] += s["requests"]
        totals["ok"] += s["ok"]
        totals["overload_503"] += res.statuses.get(503, 0)
        totals["errors"] += errors
        samples.append(
            {
                "t_s": round(minutes * 60 - (end - time.monotonic()), 1),
                "endpoint": ep,
                "image": img,
                "rps": s["throughput_rps"],
                "p95_ms": s["p95_ms"],
                "errors": errors,
                "rss_mb": round(rss_mb(pid), 1) if pid else None,
            }
        )
        print(json.dumps(samples[-1]), flush=True)
    rss = [x["rss_mb"] for x in samples if x["rss_mb"] is not None]
    return {
        **totals,
        "minutes": minutes,
        "concurrency": concurrency,
        "rss_mb_start": rss[0] if rss else None,
        "rss_mb_end": rss[-1] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="an already running server (default: start one here)")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--window", type=float, default=10.0, help="seconds per sample")
    ap.add_argument(
        "--max-queue", default="4", help="LOCSVC_MAX_QUEUE of the started server (small: 503s are exercised)"
    )
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        env = environ_settings() | {"LOCSVC_MAX_QUEUE": args.max_queue, "LOCSVC_LOG_LEVEL": "WARNING"}
        server = Server(ROOT / "artifacts" / "soak-server.log", env).wait_ready()
        url = server.url
    try:
        out = asyncio.run(soak(url, server.pid if server else None, args.minutes, args.concurrency, args.window))
    finally:
        if server:
            server.stop()
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=2))
    sys.exit(1 if out["errors"] else 0)


if __name__ == "__main__":
    main()
