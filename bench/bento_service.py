"""The peer for ``bench.perf``: the same ONNX models, served by BentoML (run from its own venv).

    BENTOML_DO_NOT_TRACK=true .venv-bento/bin/bentoml serve bench.bento_service:Svc --port 3000

Each endpoint runs the app's own service function (decode with JPEG draft, fit, onnxruntime, CAM box /
box / joints) on a session built from the same sidecar and the same ``LOCSVC_*`` settings as the
service, so the only difference is the serving stack.  ``PERF_BENTO_WORKERS`` (processes) and
``PERF_BENTO_THREADS`` (requests in a worker at once; BentoML's default is 1) set its CPU budget;
the harness sets them to the service's workers and ``LOCSVC_MAX_CONCURRENCY``.  Not imported by the app
or the tests: it needs ``bentoml`` (``pip install bentoml`` in a separate venv, see docs/performance.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bentoml

from app.config import Settings
from app.registry import Registry
from app.services.cam import CamParams, run_cam
from app.services.common import JobSettings
from app.services.localize import LocalizeParams, run_localize
from app.services.pose import PoseParams, run_pose
from app.sidecar import Task

WORKERS = int(os.environ.get("PERF_BENTO_WORKERS", "1"))
THREADS = int(os.environ.get("PERF_BENTO_THREADS", "2"))


@bentoml.service(workers=WORKERS, threads=THREADS, traffic={"timeout": 60})
class Svc:
    def __init__(self) -> None:
        self.settings = Settings()
        self.registry = Registry.load(self.settings)
        self.job_settings = JobSettings(self.settings)  # the service's own policy, as the server applies it
        self._lock = threading.Lock()
        self._running = 0

    @contextmanager
    def _job(self) -> Iterator[Settings]:
        with self._lock:
            self._running += 1
            running = self._running
        try:
            yield self.job_settings(running)
        finally:
            with self._lock:
                self._running -= 1

    @bentoml.api(route="/cam")
    def cam(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(Task.cam, None)
        with self._job() as settings:
            return run_cam(model, image.read_bytes(), CamParams(), settings).response.model_dump(mode="json")

    @bentoml.api(route="/localize")
    def localize(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(Task.localize, None)
        with self._job() as settings:
            return run_localize(model, image.read_bytes(), LocalizeParams(), settings).response.model_dump(mode="json")

    @bentoml.api(route="/pose")
    def pose(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(Task.pose, None)
        with self._job() as settings:
            return run_pose(model, image.read_bytes(), PoseParams(), settings).response.model_dump(mode="json")
