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
from pathlib import Path
from typing import Any

import bentoml

from app.config import Settings
from app.registry import Registry
from app.services.cam import CamParams, run_cam
from app.services.common import Deadline
from app.services.localize import LocalizeParams, run_localize
from app.services.pose import PoseParams, run_pose
from app.tasks import CAM, LOCALIZE, POSE

WORKERS = int(os.environ.get("PERF_BENTO_WORKERS", "1"))
THREADS = int(os.environ.get("PERF_BENTO_THREADS", "2"))


@bentoml.service(workers=WORKERS, threads=THREADS, traffic={"timeout": 60})
class Svc:
    def __init__(self) -> None:
        self.settings = Settings()
        self.registry = Registry.load(self.settings)

    @bentoml.api(route="/cam")
    def cam(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(CAM, None)
        outcome = run_cam(
            model, image.read_bytes(), CamParams(), self.settings, Deadline.start(self.settings.job_timeout_s)
        )
        return outcome.response.model_dump(mode="json")

    @bentoml.api(route="/localize")
    def localize(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(LOCALIZE, None)
        outcome = run_localize(
            model, image.read_bytes(), LocalizeParams(), self.settings, Deadline.start(self.settings.job_timeout_s)
        )
        return outcome.response.model_dump(mode="json")

    @bentoml.api(route="/pose")
    def pose(self, image: Path) -> dict[str, Any]:
        model = self.registry.get(POSE, None)
        outcome = run_pose(
            model, image.read_bytes(), PoseParams(), self.settings, Deadline.start(self.settings.job_timeout_s)
        )
        return outcome.response.model_dump(mode="json")
