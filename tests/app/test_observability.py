"""Logs of a real uvicorn process: every line JSON, one access line per request carrying its request id."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import noise_image
from tests.live import Server


def _lines(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        if line.strip():
            docs.append(json.loads(line))  # fails the test on any line that is not JSON
    return docs


def test_every_line_is_json_and_one_access_line_per_request(tiny_models_dir: Path, tmp_path: Path) -> None:
    server = Server(tmp_path / "server.log", tiny_models_dir)
    try:
        server.wait_ready()
        buf = io.BytesIO()
        noise_image(64, 48).save(buf, "JPEG")
        ok = httpx.post(f"{server.url}/localize", files={"image": ("a.jpg", buf.getvalue(), "image/jpeg")}, timeout=30)
        missing = httpx.get(f"{server.url}/no-such-page", headers={"X-Request-ID": "client-id-1"}, timeout=30)
        assert ok.status_code == 200 and missing.status_code == 404
        # a malformed upload: python-multipart logs a warning of its own, which must come out as JSON too
        bad = httpx.post(
            f"{server.url}/localize",
            content=b"garbage",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            timeout=30,
        )
        assert bad.status_code == 400
    finally:
        code = server.stop()
    assert code in (0, -15)
    docs = _lines(server.output())
    messages = [d["msg"] for d in docs]
    # uvicorn's own start-up and shutdown lines come through the JSON handler too
    assert any(m.startswith("Started server process") for m in messages), messages
    assert "Application shutdown complete." in messages
    assert all("color_message" not in d for d in docs)
    access = [d for d in docs if d["logger"] == "app.access"]
    assert [(d["path"], d["status"]) for d in access if d["path"] != "/readyz"] == [
        ("/localize", 200),
        ("/no-such-page", 404),
        ("/localize", 400),
    ]
    assert any(d["logger"].startswith("python_multipart") for d in docs), "the library's warning was not logged"
    by_path = {d["path"]: d for d in access if d["status"] != 400}
    assert by_path["/localize"]["request_id"] == ok.headers["x-request-id"]
    assert by_path["/no-such-page"]["request_id"] == "client-id-1" == missing.headers["x-request-id"]
    assert not any(d["logger"] == "uvicorn.access" for d in docs)
