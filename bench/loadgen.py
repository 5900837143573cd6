"""Async HTTP load generator (httpx): closed loop, N workers posting an image for a duration.

python -m bench.loadgen --url http://127.0.0.1:8000 --endpoint /cam --image photo.jpg -c 4 -d 30
python -m bench.loadgen --endpoint /localize --image photo.jpg --raw     # the raw body, not multipart
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np


@dataclass
class LoadResult:
    endpoint: str
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0

    def summary(self) -> dict[str, Any]:
        ok = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        n_ok = self.statuses.get(200, 0)
        return {
            "endpoint": self.endpoint,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": sum(self.statuses.values()) + self.transport_errors,
            "ok": n_ok,
            "throughput_rps": round(n_ok / self.duration_s, 2) if self.duration_s else 0.0,
            "p50_ms": round(float(np.percentile(ok, 50)), 2),
            "p95_ms": round(float(np.percentile(ok, 95)), 2),
            "p99_ms": round(float(np.percentile(ok, 99)), 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": self.transport_errors,
        }


async def run_load(
    url: str,
    endpoint: str,
    image: bytes,
    concurrency: int,
    duration_s: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    max_requests: int | None = None,
    field_name: str | None = "image",
) -> LoadResult:
    """Closed loop: each worker posts, waits for the answer, posts again, until the time is up.  The image
    goes in the multipart field ``field_name``, or as the raw body (``Content-Type: image/jpeg``) when it is None."""
    result = LoadResult(endpoint, concurrency, 0.0)
    deadline = time.perf_counter() + duration_s
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
                sent += 1
                t0 = time.perf_counter()
                try:
                    if field_name is None:
                        r = await client.post(
                            endpoint, params=params, headers={**(headers or {}), "Content-Type": "image/jpeg"}, content=image
                        )
                    else:
                        r = await client.post(
                            endpoint, params=params, headers=headers, files={field_name: ("image.jpg", image, "image/jpeg")}
                        )
                except httpx.TransportError:
                    result.transport_errors += 1
                    continue
                result.statuses[r.status_code] += 1
                if r.status_code == 200:
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.duration_s = time.perf_counter() - start
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", default="/cam")
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("-c", "--concurrency", type=int, default=4)
    ap.add_argument("-d", "--duration", type=float, default=20.0)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--raw", action="store_true", help="send the image as the raw body instead of a multipart field")
    args = ap.parse_args()
    headers = {"X-API-Key": args.api_key} if args.api_key else None
    res = asyncio.run(
        run_load(
            args.url, args.endpoint, args.image.read_bytes(), args.concurrency, args.duration, headers=headers,
            field_name=None if args.raw else "image",
        )
    )
    print(json.dumps(res.summary(), indent=2))


if __name__ == "__main__":
    main()
