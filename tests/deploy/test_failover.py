"""Instance loss behind the shipped nginx config: two service processes, one SIGKILLed mid-load, no request lost.

No Docker: Debian's nginx (``make install-nginx``) runs in the foreground with deploy/nginx/nginx.conf
rendered for loopback ports (tests/deploy/local.py). Run with ``-s`` to see the measured throughput.
"""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.loadgen import LoadResult, run_load
from tests.deploy.local import (
    LOOPBACK,
    access_log,
    free_port,
    nginx_binary,
    start_backend,
    start_nginx,
    stop,
    tail,
    wait_http_ok,
)

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (`make install-nginx`: Debian's nginx package)"
)

BACKEND_ENV = {"LOCSVC_MODELS": '["efficientnet_lite0_imagenet"]', "LOCSVC_INTRA_OP_THREADS": "1"}
CONCURRENCY = 4
BEFORE_KILL_S = 4.0
AFTER_KILL_S = 5.0


def cat_jpeg() -> bytes:
    skd = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skd.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


async def load_with_kill(
    url: str, image: bytes, victim: subprocess.Popen[bytes]
) -> tuple[LoadResult, float, float, float]:
    """Closed-loop load through nginx; SIGKILL ``victim`` BEFORE_KILL_S into it. Returns (result, t0, t_kill, t_end)."""
    t0 = time.time()
    load = asyncio.create_task(run_load(url, "/cam", image, CONCURRENCY, BEFORE_KILL_S + AFTER_KILL_S))
    await asyncio.sleep(BEFORE_KILL_S)
    t_kill = time.time()
    victim.send_signal(signal.SIGKILL)
    result = await load
    return result, t0, t_kill, time.time()


def rps(entries: list[dict[str, Any]], start: float, end: float) -> float:
    ok = sum(1 for e in entries if e["status"] == 200 and start <= e["time"] < end)
    return ok / (end - start)


def test_instance_loss_behind_nginx_loses_no_request(tmp_path: Path) -> None:
    image = cat_jpeg()
    ports = [free_port(), free_port()]
    lb_port = free_port()
    backends: list[subprocess.Popen[bytes]] = []
    nginx: subprocess.Popen[bytes] | None = None
    logs = [tmp_path / f"backend-{p}.log" for p in ports] + [tmp_path / "error.log", tmp_path / "nginx.out"]
    try:
        backends = [start_backend(tmp_path, p, BACKEND_ENV) for p in ports]
        nginx = start_nginx(tmp_path, lb_port, ports)
        for p in ports:
            wait_http_ok(f"http://{LOOPBACK}:{p}/readyz", backends, 60, logs)
        url = f"http://{LOOPBACK}:{lb_port}"
        wait_http_ok(f"{url}/lb-healthz", [nginx], 10, logs)
        wait_http_ok(f"{url}/readyz", [nginx], 10, logs)

        # X-Request-ID: the client's id goes through to the service and back; without one, nginx makes one.
        r = httpx.get(f"{url}/readyz", headers={"X-Request-ID": "failover-test-1"}, timeout=5)
        assert r.headers["X-Request-ID"] == "failover-test-1"
        r = httpx.get(f"{url}/readyz", timeout=5)
        assert len(r.headers["X-Request-ID"]) == 32
        logged_before = len(access_log(tmp_path / "access.log"))

        victim, survivor = backends
        result, t0, t_kill, t_end = asyncio.run(load_with_kill(url, image, victim))
        assert victim.wait(5) == -signal.SIGKILL
        assert survivor.poll() is None, tail(logs)

        summary = result.summary()
        # nginx writes a log line after the response went out: give the last lines a moment (bounded)
        for _ in range(50):
            entries = [e for e in access_log(tmp_path / "access.log")[logged_before:] if e["uri"].startswith("/cam")]
            if len(entries) >= summary["requests"]:
                break
            time.sleep(0.05)
        retried = [e for e in entries if "," in e["upstream_addr"]]
        before, after = rps(entries, t0, t_kill), rps(entries, t_kill, t_end)
        print(
            f"\nfailover: {summary['requests']} requests, statuses {summary['statuses']}, transport errors "
            f"{summary['transport_errors']}, retried by nginx on the other instance: {len(retried)}"
            f"\nthroughput (cat 451x300 JPEG, /cam, concurrency {CONCURRENCY}): 2 instances {before:.2f} req/s "
            f"before the kill, 1 instance {after:.2f} req/s after; p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms"
        )

        # No request lost: every one answered 200, none failed in transport.
        assert result.transport_errors == 0, summary
        assert set(result.statuses) == {200}, summary
        assert len(entries) == summary["requests"], "nginx logged a different number of /cam requests"
        assert all(e["status"] == 200 for e in entries)
        # ... because nginx replayed the POSTs that met the dead instance on the live one.
        assert retried, "no request met the killed instance: the kill did not happen under load"
        victim_addr = f"{LOOPBACK}:{ports[0]}"
        assert all(e["upstream_addr"].split(", ")[-1] == f"{LOOPBACK}:{ports[1]}" for e in retried)
        assert all(victim_addr in e["upstream_addr"] for e in retried)
        assert before > 0 and after > 0
    finally:
        stop(nginx)
        for b in backends:
            stop(b)
