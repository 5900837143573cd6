"""The limit: the service's own work done in-process, without HTTP, for ``bench.perf``.

Each request is the app's service function (``run_cam`` / ``run_localize`` / ``run_pose``): decode,
fit, onnxruntime and post-processing, with the ``Settings`` read from the same ``LOCSVC_*``
environment as the server.  ``concurrency`` threads post in a closed loop; a semaphore of
``settings.max_concurrency`` admits them to the work, exactly as the server's inference limiter does.

``python -m bench.perf_inproc`` is the worker the harness drives (:class:`bench.server.InprocWorker`): it
loads the registry once, then answers one JSON line per command read on stdin (``{"endpoint", "image",
"concurrency", "duration_s"}`` with the image as a path) with the run's summary.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.config import Settings
from app.registry import Registry
from app.services.common import Deadline
from app.sidecar import Task
from app.tasks import CAM, LOCALIZE, POSE
from bench.loadgen import LoadResult

Job = Callable[[bytes, Settings], object]


def service_job(registry: Registry, endpoint: str) -> Job:
    """The service function behind ``endpoint`` (default parameters, default model), as ``(data, settings) -> outcome``."""
    task = Task(endpoint.strip("/"))
    if task is Task.cam:
        from app.services.cam import CamParams, run_cam

        cam_model, cam_params = registry.get(CAM, None), CamParams()
        return lambda data, settings: run_cam(
            cam_model, data, cam_params, settings, Deadline.start(settings.job_timeout_s)
        )
    if task is Task.localize:
        from app.services.localize import LocalizeParams, run_localize

        loc_model, loc_params = registry.get(LOCALIZE, None), LocalizeParams()
        return lambda data, settings: run_localize(
            loc_model, data, loc_params, settings, Deadline.start(settings.job_timeout_s)
        )
    from app.services.pose import PoseParams, run_pose

    pose_model, pose_params = registry.get(POSE, None), PoseParams()
    return lambda data, settings: run_pose(
        pose_model, data, pose_params, settings, Deadline.start(settings.job_timeout_s)
    )


class FifoGate:
    """A semaphore that admits waiters in arrival order (as the server's asyncio limiter does;
    ``threading.Semaphore`` lets a releasing thread take its slot straight back)."""

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._slots = slots
        self._free = slots
        self._next = 0  # next ticket to hand out
        self._serving = 0  # lowest ticket not yet admitted

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._free > 0 and self._serving == ticket)
            self._free -= 1
            self._serving += 1
            self._cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    @property
    def active(self) -> int:
        """Holders now (as the server limiter's ``active``)."""
        return self._slots - self._free


def run_inprocess(
    job: Job,
    image: bytes,
    concurrency: int,
    duration_s: float,
    settings: Settings,
    endpoint: str = "",
    max_requests: int | None = None,
) -> LoadResult:
    """Closed loop over a thread pool: ``concurrency`` workers, at most ``settings.max_concurrency`` in the job
    at once, as the server's limiter admits them."""
    result = LoadResult(endpoint, concurrency, 0.0)
    gate = FifoGate(settings.max_concurrency)
    lock = threading.Lock()
    sent = 0
    deadline = time.perf_counter() + duration_s

    def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            with lock:
                if max_requests is not None and sent >= max_requests:
                    return
                sent += 1
            t0 = time.perf_counter()
            try:
                with gate:
                    job(image, settings)
            except Exception:
                with lock:
                    result.statuses[500] += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                result.statuses[200] += 1
                result.latencies_ms.append(ms)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="inproc") as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    result.duration_s = time.perf_counter() - start
    return result


class InProcess:
    """A loaded registry and its jobs, one per endpoint."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.registry = Registry.load(self.settings)
        self._jobs: dict[str, Job] = {}

    def job(self, endpoint: str) -> Job:
        if endpoint not in self._jobs:
            self._jobs[endpoint] = service_job(self.registry, endpoint)
        return self._jobs[endpoint]

    def run(
        self, endpoint: str, image: bytes, concurrency: int, duration_s: float, max_requests: int | None = None
    ) -> LoadResult:
        return run_inprocess(self.job(endpoint), image, concurrency, duration_s, self.settings, endpoint, max_requests)


def serve_stdio() -> None:
    """Worker loop for the harness: one JSON command per stdin line, one JSON answer per stdout line."""
    t0 = time.perf_counter()
    runner = InProcess()
    images: dict[str, bytes] = {}
    print(json.dumps({"ready": True, "load_s": round(time.perf_counter() - t0, 3)}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd: dict[str, Any] = json.loads(line)
        path = cmd["image"]
        if path not in images:
            images[path] = Path(path).read_bytes()
        res = runner.run(cmd["endpoint"], images[path], int(cmd["concurrency"]), float(cmd["duration_s"]))
        print(
            json.dumps(
                {"latencies_ms": res.latencies_ms, "statuses": dict(res.statuses), "duration_s": res.duration_s}
            ),
            flush=True,
        )


if __name__ == "__main__":
    serve_stdio()
