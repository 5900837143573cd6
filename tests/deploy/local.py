"""Run the shipped nginx config and the service on loopback ports, without Docker.

``render_nginx_conf`` turns deploy/nginx/nginx.conf (written for compose) into a config for a local nginx:
the upstream ``server NAME:PORT resolve PARAMS;`` line becomes one ``server 127.0.0.1:PORT PARAMS;`` per
backend (the same max_fails/fail_timeout), ``listen`` a loopback port, and every path nginx writes (pid,
temp files, logs) goes under a run directory. Everything else is the shipped file, unchanged, except the
per-client request rate when a test asks for another (``client_rate``: a load test's clients all come from
127.0.0.1, and a fast machine would meet the shipped rate limit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.server import LOOPBACK, Server, free_port  # noqa: F401 (free_port: imported from here by the tests)

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def nginx_globals() -> str:
    """``-g`` directives: in the foreground; as root, workers stay root (``nobody`` cannot enter pytest's 0700 tmp)."""
    return "daemon off; user root;" if os.geteuid() == 0 else "daemon off;"


def _sub(pattern: str, repl: str, text: str, what: str) -> str:
    out, n = re.subn(pattern, repl, text, flags=re.M)
    if n == 0:
        raise AssertionError(f"deploy/nginx/nginx.conf has no {what} ({pattern!r}): update render_nginx_conf")
    return out


def render_nginx_conf(
    template: str, listen_port: int, backends: list[int], run_dir: Path, client_rate: str | None = None
) -> str:
    m = re.search(r"^(?P<indent>[ \t]*)server[ \t]+\S+:\d+[ \t]+resolve(?P<params>[^;]*);", template, flags=re.M)
    if m is None:
        raise AssertionError("deploy/nginx/nginx.conf has no upstream `server NAME:PORT resolve ...;` line")
    servers = "\n".join(f"{m['indent']}server {LOOPBACK}:{port}{m['params']};" for port in backends)
    text = template[: m.start()] + servers + template[m.end() :]
    text = _sub(r"^([ \t]*)listen[ \t]+\d+;", rf"\g<1>listen {LOOPBACK}:{listen_port};", text, "listen port")
    text = _sub(r"/tmp/nginx", str(run_dir / "nginx"), text, "/tmp/nginx paths")
    text = _sub(r"access_log /dev/stdout", f"access_log {run_dir / 'access.log'}", text, "access_log")
    text = _sub(r"error_log /dev/stderr", f"error_log {run_dir / 'error.log'}", text, "error_log")
    if client_rate is not None:
        text = _sub(r"(limit_req_zone\s[^;]*\brate=)\S+?;", rf"\g<1>{client_rate};", text, "limit_req_zone rate")
    return text


def start_nginx(
    run_dir: Path, listen_port: int, backends: list[int], client_rate: str | None = None
) -> subprocess.Popen[bytes]:
    binary = nginx_binary()
    assert binary is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(render_nginx_conf(NGINX_CONF.read_text(), listen_port, backends, run_dir, client_rate))
    log = (run_dir / "nginx.out").open("wb")
    try:
        return subprocess.Popen(
            [binary, "-c", str(conf), "-p", f"{run_dir}/", "-e", str(run_dir / "error.log"), "-g", nginx_globals()],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        log.close()


def start_backend(run_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """uvicorn on ``port`` (``bench.server``: ``LOCSVC_*`` from ``env`` only), output in
    ``run_dir/backend-PORT.log``; auth off (no API key in these tests) and WARNING logs unless ``env`` says
    otherwise (``LOCSVC_LOG_LEVEL=INFO``: one JSON access line per request).  Not waited for: see wait_http_ok."""
    log = run_dir / f"backend-{port}.log"
    return Server(log, {"LOCSVC_LOG_LEVEL": "WARNING", **env}, port=port, log_level="warning").proc


def wait_http_ok(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float, logs: list[Path]) -> None:
    """Poll ``url`` until it answers 200; fail early (with the logs) if one of ``procs`` exits."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.1) + 1):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"process {p.args!r} exited with {p.returncode}:\n{tail(logs)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout_s} s:\n{tail(logs)}")


def tail(logs: list[Path], n: int = 2000) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in logs if p.exists())


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def access_log(path: Path) -> list[dict[str, Any]]:
    """nginx's JSON access log (log_format upstream_json of the shipped config)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def backend_request_ids(log: Path) -> list[str]:
    """Request ids of the service's access lines (logger ``app.access``, JSON logs, LOCSVC_LOG_LEVEL=INFO)."""
    ids = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("logger") == "app.access":
            ids.append(str(doc["request_id"]))
    return ids
