"""Request-scoped resources, injected through ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, File, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import NotReady, ServiceError, Unauthorized
from app.limits import InferenceLimiter
from app.observability import Metrics
from app.registry import Registry
from app.schemas import Timings

T = TypeVar("T")

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Needed when the service runs with LOCSVC_API_KEY set.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_registry(request: Request) -> Registry:
    registry: Registry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        raise NotReady("models are still loading", headers={"Retry-After": "1"})
    return registry


@dataclass(frozen=True)
class InferenceContext:
    """What an inference route needs, handed over while the request holds an inference slot."""

    registry: Registry
    settings: Settings
    metrics: Metrics

    def observe(self, model: str, job: Callable[[], T], timings: Callable[[T], Timings]) -> T:
        """Run an inference job, recording its stage timings or its failure reason."""
        try:
            result = job()
        except ServiceError as exc:
            self.metrics.inference_failure.labels(model, exc.slug).inc()
            raise
        t = timings(result)
        self.metrics.preprocess.labels(model).observe(t.decode_ms / 1000)
        self.metrics.compute.labels(model).observe(t.inference_ms / 1000)
        self.metrics.postprocess.labels(model).observe(t.postprocess_ms / 1000)
        self.metrics.inference_success.labels(model).inc()
        return result


async def inference_context(request: Request) -> AsyncIterator[InferenceContext]:
    """Check readiness, then wait for an inference slot (bounded queue, 503 beyond) and hold it."""
    context = InferenceContext(get_registry(request), get_settings(request), get_metrics(request))
    limiter: InferenceLimiter = request.app.state.limiter
    async with limiter.slot():
        yield context


def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    expected = get_settings(request).api_key or ""
    if not key or not secrets.compare_digest(key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header", field="X-API-Key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
InferenceDep = Annotated[InferenceContext, Depends(inference_context)]
ImageUpload = Annotated[UploadFile, File(description="The picture: JPEG, PNG, GIF, WebP, BMP or TIFF (sniffed from its bytes).")]
