"""Request-scoped resources, injected through ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, File, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import NotReady, Unauthorized
from app.limits import InferenceLimiter
from app.observability import Metrics
from app.registry import Registry

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


async def inference_slot(request: Request) -> AsyncIterator[None]:
    limiter: InferenceLimiter = request.app.state.limiter
    async with limiter.slot():
        yield


def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    expected = get_settings(request).api_key or ""
    if not key or not secrets.compare_digest(key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header", field="X-API-Key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
InferenceSlot = Annotated[None, Depends(inference_slot)]
ImageUpload = Annotated[UploadFile, File(description="The picture: JPEG, PNG, GIF, WebP, BMP or TIFF (sniffed from its bytes).")]
