"""Schemathesis against the live OpenAPI spec of a running server: zero server errors, responses as documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from tests.live import Server  # noqa: E402

API_KEY = "fuzz-key"


@pytest.fixture(scope="module")
def live_url(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Server(tmp_path_factory.mktemp("fuzz") / "server.log", tiny_models_dir, LOCSVC_API_KEY=API_KEY)
    try:
        server.wait_ready()
        yield server.url
    finally:
        code = server.stop()
        out = server.output()
        # uvicorn re-raises SIGTERM after its graceful shutdown
        assert code in (0, -15) and "Application shutdown complete" in out, out[-2000:]
        assert "Traceback" not in out, out[-3000:]


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
