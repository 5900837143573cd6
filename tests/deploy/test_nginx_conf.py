"""The shipped nginx config (deploy/nginx/nginx.conf): what it promises, and that nginx accepts it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.deploy.local import (
    LOOPBACK,
    NGINX_CONF,
    free_port,
    nginx_binary,
    nginx_globals,
    render_nginx_conf,
    start_nginx,
    stop,
    wait_http_ok,
)

CONF = NGINX_CONF.read_text()
needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (`make install-nginx`)")


def directive(name: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;]*);", CONF, flags=re.M)]


def size_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    m = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert m, value
    return int(m[1]) * units[m[2]]


def test_body_limit_matches_the_service() -> None:
    (limit,) = directive("client_max_body_size")
    assert size_bytes(limit) == Settings().max_upload_bytes == 20 * 1024 * 1024
    assert str(Settings().max_upload_bytes) in CONF  # the 413 problem's detail


def test_retries_and_passive_health_checks() -> None:
    (next_upstream,) = directive("proxy_next_upstream")
    assert set(next_upstream.split()) >= {"error", "timeout", "http_502", "http_503", "non_idempotent"}
    (tries,) = directive("proxy_next_upstream_tries")
    assert int(tries) >= 2
    (server,) = re.findall(r"^\s*server\s+(\S+:\d+\s+resolve[^;]*);", CONF, flags=re.M)
    assert "max_fails=" in server and "fail_timeout=" in server
    assert directive("zone"), "failure counts must be shared by the workers"
    assert any(r.startswith("127.0.0.11") and "valid=" in r for r in directive("resolver"))
    assert "on" in directive("proxy_request_buffering")  # the body must be here to be replayed
    # Read timeout above the service's queue timeout: a request waiting for a slot is not cut off.
    (read_timeout,) = directive("proxy_read_timeout")
    assert int(read_timeout.rstrip("s")) > Settings().queue_timeout_s
    assert "proxy_set_header X-Request-ID $req_id" in CONF


@needs_nginx
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    binary = nginx_binary()
    assert binary
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(CONF, free_port(), [free_port(), free_port()], tmp_path))
    out = subprocess.run(
        [binary, "-t", "-c", str(conf), "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log"), "-g", nginx_globals()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@needs_nginx
def test_over_limit_and_no_backend_answers(tmp_path: Path) -> None:
    """No backend listening: nginx alone answers 413 (as problem+json, with the request id) and 502."""
    lb_port = free_port()
    nginx = start_nginx(tmp_path, lb_port, [free_port()])
    try:
        url = f"http://{LOOPBACK}:{lb_port}"
        wait_http_ok(f"{url}/lb-healthz", [nginx], 10, [tmp_path / "error.log", tmp_path / "nginx.out"])
        big = b"\0" * (Settings().max_upload_bytes + 1)
        r = httpx.post(
            f"{url}/cam", content=big, headers={"X-Request-ID": "too-big-1", "Content-Type": "image/jpeg"}, timeout=30
        )
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["status"] == 413 and body["request_id"] == "too-big-1" and body["field"] == "image"
        assert r.headers["X-Request-ID"] == "too-big-1"
        r = httpx.post(f"{url}/cam", content=b"x", timeout=30)
        assert r.status_code == 502
    finally:
        stop(nginx)
