"""The one way bench/ and tests/ start a server: ``uvicorn app.main:app`` (or another ASGI app, or another
command such as ``bentoml serve``) in a subprocess on a free loopback port.

* environment: this process's, without its ``LOCSVC_*`` variables (the server gets those its caller passes
  and no others), the repository on ``PYTHONPATH``, and ``LOCSVC_AUTH=off`` unless the caller says otherwise
  (it binds 127.0.0.1 only; the service's own default is auth on and it refuses to start without a key);
* output (stdout and stderr) to a log file;
* :meth:`Server.wait_ready` polls ``/readyz`` until 200 and fails with the end of the log
  (:class:`ServerError`) when the process exits or the time is up; ``ready_s`` is from just before the start;
* :meth:`Server.stop`: SIGTERM, wait for the graceful shutdown, then SIGKILL;
* :func:`rss_mb` and :func:`cpu_s` of a process tree (psutil), for the benchmarks;
* :class:`InprocWorker`: ``python -m bench.perf_inproc`` (the in-process limit) started the same way, driven
  over stdin/stdout, for ``bench.perf`` and ``bench.perf_tune``.

The harnesses whose documented knobs are the environment (``bench.perf``, ``bench.soak``,
``bench.asgi_floor``) pass :func:`environ_settings` on explicitly.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from bench.loadgen import LoadResult

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """The server exited, or was not ready in time; the message ends with the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def environ_settings() -> dict[str, str]:
    """This process's ``LOCSVC_*`` variables, for a harness that documents them as its knobs."""
    return {k: v for k, v in os.environ.items() if k.startswith("LOCSVC_")}


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process started here: this process's without ``LOCSVC_*``, the repository on
    ``PYTHONPATH``, ``LOCSVC_AUTH=off`` (loopback only), then ``env``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("LOCSVC_")}
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out["LOCSVC_AUTH"] = "off"
    return out | dict(env or {})


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` options of a harness as a dict (exits on a pair without ``=``)."""
    env: dict[str, str] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        env[k] = v
    return env


def uvicorn_command(
    port: int, app: str = "app.main:app", *, factory: bool = False, workers: int = 1, log_level: str = "info"
) -> list[str]:
    """``uvicorn APP`` on 127.0.0.1:``port`` as ``make run`` starts it (30 s graceful shutdown)."""
    cmd = [sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else [])]
    cmd += ["--host", LOOPBACK, "--port", str(port), "--log-level", log_level, "--timeout-graceful-shutdown", "30"]
    return cmd + (["--workers", str(workers)] if workers > 1 else [])


class Server:
    """A server process, started at once; ``wait_ready`` before use, ``stop`` (or ``with``) at the end.

    ``command`` replaces the uvicorn command line (it must listen on ``port``, which the caller then gives)."""

    def __init__(
        self,
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        app: str = "app.main:app",
        factory: bool = False,
        workers: int = 1,
        log_level: str = "info",
        command: Sequence[str] | None = None,
        name: str = "service",
    ) -> None:
        if command is not None and port is None:
            raise ValueError("a custom command needs the port it listens on")
        self.name = name
        self.port = port if port is not None else free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log = log
        self.ready_s = math.nan
        cmd = (
            list(command)
            if command is not None
            else uvicorn_command(self.port, app, factory=factory, workers=workers, log_level=log_level)
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.perf_counter()
        with log.open("wb") as out:  # the child keeps its own copy of the file
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=server_env(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 120.0, poll_s: float = 0.05, path: str = "/readyz") -> Server:
        """Poll ``path`` until it answers 200; :class:`ServerError` with the log's end when the process exits
        or after ``timeout`` seconds (then the server is stopped)."""
        deadline = time.perf_counter() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise ServerError(
                        f"{self.name} exited with {self.proc.returncode}; {self.log} ends:\n{self.tail()}"
                    )
                try:
                    if client.get(self.url + path).status_code == 200:
                        self.ready_s = time.perf_counter() - self._t0
                        return self
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    break
                time.sleep(poll_s)
        self.stop()
        raise ServerError(f"{self.name} was not ready within {timeout} s; {self.log} ends:\n{self.tail()}")

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, wait up to ``timeout`` s for the graceful shutdown, else SIGKILL; the exit code (again
        when already stopped)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_s(self) -> float:
        return cpu_s(self.pid)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class InprocWorker:
    """``python -m bench.perf_inproc`` with the service's environment, driven over stdin/stdout."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.perf_inproc"],
            cwd=ROOT,
            env=server_env(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        hello = self._read()
        self.load_s = float(hello["load_s"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process worker exited with {self.proc.wait()}; see {self.log.name}")
        out: dict[str, Any] = json.loads(line)
        return out

    def run(self, endpoint: str, image: Path, concurrency: int, duration_s: float) -> LoadResult:
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            (
                json.dumps(
                    {"endpoint": endpoint, "image": str(image), "concurrency": concurrency, "duration_s": duration_s}
                )
                + "\n"
            ).encode()
        )
        self.proc.stdin.flush()
        got = self._read()
        res = LoadResult(endpoint, concurrency, float(got["duration_s"]), list(got["latencies_ms"]))
        res.statuses.update({int(k): v for k, v in got["statuses"].items()})
        return res

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def _tree(pid: int) -> list[psutil.Process]:
    """The process and its live descendants (empty when it is gone)."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB (0 when it is gone)."""
    total = 0
    for p in _tree(pid):
        try:
            total += int(p.memory_info().rss)
        except psutil.Error:
            continue
    return total / 2**20


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (0 when it is gone)."""
    total = 0.0
    for p in _tree(pid):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += float(t.user) + float(t.system)
    return total
