"""The shipped nginx config (deploy/nginx/nginx.conf): what it promises, and that nginx accepts it."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.config import Settings
from tests.deploy.local import (
    LOOPBACK,
    NGINX_CONF,
    ROOT,
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


def default(field: str) -> Any:
    """A Settings field's default (not Settings(): that would read the environment and .env)."""
    info = Settings.model_fields.get(field)
    return None if info is None else info.default


QUEUE_TIMEOUT_S: float = default("queue_timeout_s")
# LOCSVC_JOB_TIMEOUT_S (the whole job: decode, inference, post-processing) has a 10 s default; until the
# field exists in app.config this is that value.
JOB_TIMEOUT_S: float = default("job_timeout_s") or 10.0
MARGIN_S = 5.0  # at least, between the service's longest legitimate answer and nginx giving up on it


def directive(name: str, text: str = CONF) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;]*);", text, flags=re.M)]


def block(head: str) -> str:
    """The body of the (brace-free) block ``head { ... }``."""
    m = re.search(rf"^\s*{head}\s*\{{(?P<body>[^{{}}]*)\}}", CONF, flags=re.M)
    assert m, f"no `{head} {{ ... }}` block"
    return m["body"]


def size_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    m = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert m, value
    return int(m[1]) * units[m[2]]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0}
    m = re.fullmatch(r"(\d+)(ms|s|m|)", value)
    assert m, value
    return int(m[1]) * units[m[2]]


def dockerfile_cmd_option(name: str) -> str | None:
    """The value of ``name`` in the image's uvicorn CMD, if given there."""
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    args = json.loads(cmd)
    return args[args.index(name) + 1] if name in args else None


def test_body_limit_matches_the_service() -> None:
    (limit,) = directive("client_max_body_size")
    assert size_bytes(limit) == default("max_upload_bytes")
    assert f"over the limit of {default('max_upload_bytes')} bytes" in CONF  # the 413 problem's detail


def test_retries_only_where_the_request_never_reached_a_replica() -> None:
    """A POST that reached a replica is never replayed: one that killed or stalled it would do it again."""
    assert "non_idempotent" not in re.sub(r"#.*", "", CONF)
    (next_upstream,) = directive("proxy_next_upstream")
    conditions = set(next_upstream.split())
    # error/timeout: for a POST, only before it was sent (connect refused/reset, connect timeout).
    assert "error" in conditions and conditions <= {"error", "timeout"}, conditions
    assert not any(c.startswith("http_") for c in conditions), "a replica's 5xx goes to the client"
    (tries,) = directive("proxy_next_upstream_tries")
    assert int(tries) == 2, "one retry, on another replica"
    # Room for one connect timeout before the retry; none after a replica was working on the request.
    (next_timeout,) = directive("proxy_next_upstream_timeout")
    (connect,) = directive("proxy_connect_timeout")
    (read_timeout,) = directive("proxy_read_timeout")
    assert seconds(connect) < seconds(next_timeout) < seconds(read_timeout)
    assert "on" in directive("proxy_request_buffering")  # the body is complete before a replica is chosen
    assert not directive("proxy_intercept_errors") or directive("proxy_intercept_errors") == ["off"]

    # Passive health checks: failures shared by the workers, replicas re-resolved from Docker's DNS.
    (server,) = re.findall(r"^\s*server\s+(\S+:\d+\s+resolve[^;]*);", CONF, flags=re.M)
    assert "max_fails=" in server and "fail_timeout=" in server
    assert directive("zone"), "failure counts must be shared by the workers"
    assert any(r.startswith("127.0.0.11") and "valid=" in r for r in directive("resolver"))
    assert "proxy_set_header X-Request-ID $req_id" in CONF
    assert "$upstream_addr" in CONF and "$upstream_bytes_sent" in CONF  # the log shows every attempt


def test_timeouts_cover_the_service() -> None:
    """nginx does not give up on a request the service is still entitled to work on."""
    (read_timeout,) = directive("proxy_read_timeout")
    assert seconds(read_timeout) >= QUEUE_TIMEOUT_S + JOB_TIMEOUT_S + MARGIN_S, (QUEUE_TIMEOUT_S, JOB_TIMEOUT_S)
    (send_timeout,) = directive("proxy_send_timeout")
    assert seconds(send_timeout) >= QUEUE_TIMEOUT_S + MARGIN_S  # the body may sit unread while queued


def test_upstream_connections_fit_the_replicas() -> None:
    upstream = block("upstream locsvc")
    # nginx closes idle connections before uvicorn does: a POST written onto a connection the replica is
    # closing would be lost (a 502; it is not retried once sent).
    (idle,) = directive("keepalive_timeout", upstream)
    uvicorn_keep_alive = (
        dockerfile_cmd_option("--timeout-keep-alive")
        or inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    )
    assert seconds(idle) < float(uvicorn_keep_alive)
    # Idle connections of all the workers stay below uvicorn's --limit-concurrency (it counts idle ones).
    (workers,) = directive("worker_processes")
    (pool,) = directive("keepalive", upstream)
    limit = int(dockerfile_cmd_option("--limit-concurrency") or 32)
    assert int(workers) * int(pool) < limit


def test_client_limits() -> None:
    zones = {
        kind: re.findall(rf"^\s*{kind}_zone\s+\$binary_remote_addr\s+zone=(\w+):\w+[^;]*;", CONF, flags=re.M)
        for kind in ("limit_conn", "limit_req")
    }
    assert all(len(z) == 1 for z in zones.values()), zones
    (rate,) = re.findall(r"^\s*limit_req_zone\s[^;]*\brate=(\d+)r/s;", CONF, flags=re.M)
    assert int(rate) > 0
    location = CONF[CONF.index("location / {") :]
    (conn,) = directive("limit_conn", location)
    assert conn.split()[0] == zones["limit_conn"][0]
    # One address holds at most one replica's places (in inference + admitted), the service's defaults.
    assert 0 < int(conn.split()[1]) <= default("max_concurrency") + default("max_queue")
    (req,) = directive("limit_req", location)
    assert f"zone={zones['limit_req'][0]}" in req and re.search(r"\bburst=\d+", req)
    # 429, not nginx's default 503 (which clients would take for the service's "overloaded"), as problem+json.
    assert directive("limit_conn_status") == ["429"] and directive("limit_req_status") == ["429"]
    assert "error_page 429 @rate_limited;" in CONF
    rate_limited = CONF[CONF.index("location @rate_limited") :].split("}", 1)[0]
    assert "application/problem+json" in rate_limited and "Retry-After" in rate_limited


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


def assert_problem(r: httpx.Response, status: int, request_id: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["type"].startswith("https://localization-service.dev/problems/")
    assert body["request_id"] == r.headers["X-Request-ID"]
    if request_id is not None:
        assert body["request_id"] == request_id
    return body


@needs_nginx
def test_over_limit_and_no_backend_answers(tmp_path: Path) -> None:
    """No backend listening: nginx alone answers 413 and 502, as problem+json with the request id; past the
    request rate of one address, 429 + Retry-After."""
    lb_port = free_port()
    nginx = start_nginx(tmp_path, lb_port, [free_port()])
    try:
        url = f"http://{LOOPBACK}:{lb_port}"
        wait_http_ok(f"{url}/lb-healthz", [nginx], 10, [tmp_path / "error.log", tmp_path / "nginx.out"])
        (limit,) = directive("client_max_body_size")
        big = b"\0" * (size_bytes(limit) + 1)
        with httpx.Client(base_url=url, timeout=30) as client:
            r = client.post("/cam", content=big, headers={"X-Request-ID": "too-big-1", "Content-Type": "image/jpeg"})
            assert assert_problem(r, 413, "too-big-1")["field"] == "image"
            assert_problem(
                client.post("/cam", content=b"x", headers={"X-Request-ID": "no-backend-1"}), 502, "no-backend-1"
            )

            # The rate limit: a burst is let through (here: 502s, no backend), then 429s.
            statuses = []
            for i in range(1000):
                r = client.post("/cam", content=b"x", headers={"X-Request-ID": f"rate-{i}"})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    break
            assert statuses[-1] == 429, "no 429 within 1000 requests"
            (burst,) = re.findall(r"\bburst=(\d+)", CONF)
            assert statuses.count(502) >= int(burst)
            assert_problem(r, 429, f"rate-{len(statuses) - 1}")
            assert r.headers["Retry-After"] == "1"
            assert client.get("/lb-healthz").status_code == 200  # not limited
    finally:
        stop(nginx)


@needs_nginx
def test_connections_per_client_are_limited(tmp_path: Path) -> None:
    """A backend that accepts connections and never answers: the address's requests in progress pile up at
    nginx, and the one over limit_conn gets 429 at once."""
    location = CONF[CONF.index("location / {") :]
    per_client = int(directive("limit_conn", location)[0].split()[1])
    with socket.socket() as hole:
        hole.bind((LOOPBACK, 0))
        hole.listen(per_client + 8)  # the kernel completes the handshakes; nothing ever reads
        lb_port = free_port()
        nginx = start_nginx(tmp_path, lb_port, [hole.getsockname()[1]])
        try:
            url = f"http://{LOOPBACK}:{lb_port}"
            wait_http_ok(f"{url}/lb-healthz", [nginx], 10, [tmp_path / "error.log", tmp_path / "nginx.out"])

            async def run() -> httpx.Response:
                limits = httpx.Limits(max_connections=per_client + 1)
                async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                    hanging = [asyncio.create_task(client.post("/cam", content=b"x")) for _ in range(per_client)]
                    try:
                        for attempt in range(20):  # until nginx counts the hanging ones
                            await asyncio.sleep(0.1)
                            try:
                                r = await client.post(
                                    "/cam", content=b"x", headers={"X-Request-ID": f"conn-{attempt}"}, timeout=1
                                )
                            except httpx.TimeoutException:
                                continue
                            if r.status_code == 429:
                                return r
                        raise AssertionError("no 429 with the address's requests in progress over limit_conn")
                    finally:
                        assert not any(t.done() for t in hanging), "a request to the silent backend was answered"
                        for t in hanging:
                            t.cancel()
                        await asyncio.gather(*hanging, return_exceptions=True)

            r = asyncio.run(run())
            assert_problem(r, 429)
            assert r.headers["Retry-After"] == "1"
        finally:
            stop(nginx)
