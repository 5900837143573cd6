"""Graceful shutdown: SIGTERM lets in-flight requests finish, then the process exits cleanly."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import noise_image
from tests.live import Server


def test_sigterm_finishes_in_flight_requests(tiny_models_dir: Path, tmp_path: Path) -> None:
    server = Server(
        tmp_path / "server.log", tiny_models_dir, LOCSVC_MAX_CONCURRENCY="1", LOCSVC_MAX_UPLOAD_BYTES="100000000"
    )
    try:
        server.wait_ready()
        buf = io.BytesIO()
        noise_image(4000, 3000).save(buf, "PNG", compress_level=1)  # slow to decode: still in flight at SIGTERM
        data = buf.getvalue()
        results: list[int] = []

        def post() -> None:
            r = httpx.post(f"{server.url}/cam", files={"image": ("big.png", data, "image/png")}, timeout=60)
            results.append(r.status_code)

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
        busy = 0.0
        deadline = time.monotonic() + 20
        while busy < 4 and time.monotonic() < deadline:  # wait until all four are admitted: in inference or queued
            text = httpx.get(f"{server.url}/metrics", timeout=5).text
            busy = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith(("locsvc_inference_inflight_requests ", "locsvc_inference_pending_requests "))
            )
        assert busy >= 4, "the uploads never all reached the inference queue"
        code = server.stop()
        for t in threads:
            t.join(60)
        out = server.output()
        assert results == [200] * 4, out[-2000:]  # in flight and queued ones alike
        assert code in (0, -15) and "Application shutdown complete" in out
        # and nothing is accepted any more
        try:
            refused = httpx.get(f"{server.url}/healthz", timeout=2).status_code
        except httpx.TransportError:
            refused = -1
        assert refused == -1
        assert Image.open(io.BytesIO(data)).size == (4000, 3000)
    finally:
        if server.proc.poll() is None:
            server.stop()
