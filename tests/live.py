"""A real uvicorn server in a subprocess on a free loopback port, for tests that need one (``bench.server``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import REPO_MODELS
from bench import server


class Server(server.Server):
    """``uvicorn app.main:app`` with ``LOCSVC_*`` from ``env`` only (the caller's are dropped; auth off, one
    intra-op thread, ``models_dir`` unless ``env`` says otherwise); output to ``log``.  ``wait_ready`` fails
    the test, with the end of the log, when the server exits or is not ready in time."""

    def __init__(self, log: Path, models_dir: Path = REPO_MODELS, **env: str) -> None:
        super().__init__(log, {"LOCSVC_MODELS_DIR": str(models_dir), "LOCSVC_INTRA_OP_THREADS": "1", **env})

    def wait_ready(self, timeout: float = 60.0, poll_s: float = 0.1, path: str = "/readyz") -> Server:
        try:
            super().wait_ready(timeout, poll_s, path)
        except server.ServerError as exc:
            pytest.fail(str(exc))
        return self
