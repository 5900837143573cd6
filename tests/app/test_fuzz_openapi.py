"""Schemathesis against the live OpenAPI spec of a running server: zero server errors, responses as documented."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "fuzz-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_url(tiny_models_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "LOCSVC_MODELS_DIR": str(tiny_models_dir), "LOCSVC_LOG_LEVEL": "WARNING", "LOCSVC_API_KEY": API_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not become ready")
        yield url
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        # uvicorn re-raises SIGTERM after its graceful shutdown
        assert proc.returncode in (0, -15) and b"Application shutdown complete" in err, err.decode()[-2000:]
        assert b"Traceback" not in err, err.decode()[-2000:]


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


def test_no_server_errors(api_schema: Any) -> None:
    """Every operation, fuzzed from its schema (uploads included): no 5xx, responses match the spec."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/cam", "/localize", "/pose", "/models", "/readyz"}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            # "positive data acceptance" is left out: random bytes fit `format: binary` yet are no image,
            # and the service rightly answers 415/422 to them
            case.call_and_validate(headers={"X-API-Key": API_KEY}, excluded_checks=[positive_data_acceptance])

        run()
