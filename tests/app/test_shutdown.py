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
    server = Server(tmp_path / "server.log", tiny_models_dir, LOCSVC_MAX_CONCURRENCY="1", LOCSVC_MAX_UPLOAD_BYTES="100000000")
    try:
        server.wait_ready()
        buf = io.BytesIO()
        noise_image(4000, 3000).save(buf, "PNG", compress_level=1)  # slow to decode: still in flight at SIGTERM
        data = buf.getvalue()
        results: list[int] = []

        def post() -> None:
            r = httpx.post(f"{server.url}/cam", files={"image": ("big.png", data, "image/png")}, timeout=60)
            results.append(r.status_code)

        threads = [threading.Thread(target=post) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the uploads are in, one decoding, two queued
        assert len(results) == 0
        code = server.stop()
        for t in threads:
            t.join(60)
        out = server.output()
        assert results == [200, 200, 200], out[-2000:]
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
