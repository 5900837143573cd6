"""Request ids, JSON logs and Prometheus metrics (named in the manner of Triton's ``nv_inference_*``)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """All metrics of one app, in a registry of its own (so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "locsvc_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "locsvc_http_request_duration_seconds",
            "End-to-end HTTP latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_success = Counter(
            "locsvc_inference_request_success", "Inferences that returned a result.", ["model"], registry=r
        )
        self.inference_failure = Counter(
            "locsvc_inference_request_failure",
            "Inference requests refused or failed, by reason.",
            ["model", "reason"],
            registry=r,
        )
        self.compute = Histogram(
            "locsvc_inference_compute_duration_seconds",
            "onnxruntime time per request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.preprocess = Histogram(
            "locsvc_inference_preprocess_duration_seconds",
            "Decode + fit time per request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.postprocess = Histogram(
            "locsvc_inference_postprocess_duration_seconds",
            "CAM, boxes, joints, overlay time per request.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "locsvc_inference_queue_duration_seconds",
            "Time waiting for an inference slot.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pending = Gauge(
            "locsvc_inference_pending_requests", "Requests waiting for an inference slot (queue depth).", registry=r
        )
        self.inflight = Gauge("locsvc_inference_inflight_requests", "Requests holding an inference slot.", registry=r)
        self.models_loaded = Gauge("locsvc_models_loaded", "Models loaded and warmed up.", registry=r)
        self.decodes = Counter("locsvc_image_decodes", "Images decoded, by format.", ["format"], registry=r)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    # uvicorn adds ``color_message`` (the same text with ANSI colours) to some of its records.
    _SKIP = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in self._SKIP})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Handler(logging.StreamHandler[TextIO]):
    """Ours (stderr): replaced, not added to, when an app is configured again."""


def configure_logging(level: str, as_json: bool) -> None:
    """The app's loggers (``app.*``) write to stderr, one JSON object per line when ``as_json``.

    With ``as_json`` uvicorn's own loggers (start-up, shutdown, protocol warnings: ``uvicorn``,
    ``uvicorn.error``) and the root logger (libraries' warnings, e.g. python-multipart's on a malformed
    upload) write through the same handler, so that every line of the process is JSON.  uvicorn's access
    line is muted in both modes: ``app.access`` writes one per request, with the request id, the matched
    route and the duration (see :class:`ObservabilityMiddleware`)."""
    handler = _Handler()
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    app_logger = logging.getLogger("app")
    app_logger.handlers[:] = [handler]
    app_logger.setLevel(level.upper())
    app_logger.propagate = False
    if as_json:
        server = logging.getLogger("uvicorn")
        server.handlers[:] = [handler]
        server.propagate = False
        root = logging.getLogger()  # other handlers (a test runner's capture) are kept
        root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.WARNING)
    access.propagate = False


def route_label(scope: Scope) -> str:
    """The matched route template (bounded label cardinality), or 'unmatched'."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class ObservabilityMiddleware:
    """Pure ASGI: request id in and out (``X-Request-ID``), access log, request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger("app.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = route_label(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            self.log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)
