"""A real uvicorn server in a subprocess on a free loopback port, for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import REPO_MODELS

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``uvicorn app.main:app`` with ``LOCSVC_*`` from ``env`` only (the caller's are dropped); output to ``log``."""

    def __init__(self, log: Path, models_dir: Path = REPO_MODELS, **env: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LOCSVC_")}
        full_env |= {"LOCSVC_MODELS_DIR": str(models_dir), "LOCSVC_INTRA_OP_THREADS": "1", "LOCSVC_AUTH": "off", **env}
        self._out = log.open("wb")
        cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "info", "--timeout-graceful-shutdown", "30"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self._out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the server was not ready within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, wait for the graceful shutdown; returns the exit code."""
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")
