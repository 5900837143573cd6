"""Request-scoped resources, injected through ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Protocol, TypeVar

import anyio
from fastapi import Depends, File, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import InvalidParameter, NotReady, ServiceError, Unauthorized, UnsupportedMediaType
from app.limits import InferenceLimiter
from app.observability import Metrics
from app.registry import Registry
from app.schemas import ImageInfo, Timings
from app.services.common import JobSettings

T = TypeVar("T")


class Answer(Protocol):
    """What every inference response has: its stage timings and what was read of the image."""

    @property
    def timings(self) -> Timings: ...

    @property
    def image(self) -> ImageInfo: ...

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
    """What an inference route needs: the registry, settings, metrics, and the admission limiter that
    :meth:`run` holds a slot of while the job runs."""

    registry: Registry
    settings: Settings
    metrics: Metrics
    limiter: InferenceLimiter
    job_settings: JobSettings

    async def run(self, model: str, job: Callable[[Settings], T], answer: Callable[[T], Answer]) -> T:
        """Wait for an inference slot (bounded queue, 503 beyond or after the queue timeout), then run the
        blocking job (upload read, decode, onnxruntime, post-processing) in the thread pool - one hop off
        the event loop - and record it (see :meth:`observe`).  The slot is held for the job only: it is
        free again before the response is serialized and sent."""
        async with self.limiter.slot():
            return await anyio.to_thread.run_sync(self.observe, model, job, answer)

    def observe(self, model: str, job: Callable[[Settings], T], answer: Callable[[T], Answer]) -> T:
        """Run an inference job with the settings for the jobs running now (:class:`JobSettings`),
        recording its stage timings and decoder, or its failure reason."""
        try:
            result = job(self.job_settings(self.limiter.active))
        except ServiceError as exc:
            self.metrics.inference_failure.labels(model, exc.slug).inc()
            raise
        done = answer(result)
        t = done.timings
        self.metrics.decodes.labels(done.image.format, done.image.decoder).inc()
        self.metrics.preprocess.labels(model).observe(t.decode_ms / 1000)
        self.metrics.compute.labels(model).observe(t.inference_ms / 1000)
        self.metrics.postprocess.labels(model).observe(t.postprocess_ms / 1000)
        self.metrics.inference_success.labels(model).inc()
        return result


async def inference_context(request: Request) -> InferenceContext:
    """Check readiness (503 while the models load).  ``async``: FastAPI runs a plain-``def`` dependency
    in the thread pool, a hop per request."""
    state = request.app.state
    return InferenceContext(get_registry(request), state.settings, state.metrics, state.limiter, state.job_settings)


def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    expected = get_settings(request).api_key or ""
    if not key or not secrets.compare_digest(key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header", field="X-API-Key")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
InferenceDep = Annotated[InferenceContext, Depends(inference_context)]


@dataclass(frozen=True)
class ImageBody:
    """The picture's bytes: a multipart file field (spooled by Starlette, read in the job) or the raw
    request body (already in memory)."""

    upload: UploadFile | None = None
    raw: bytes | None = None

    def read(self) -> bytes:
        """The uploaded bytes (the body size limit is enforced upstream, while streaming).  Blocking (a
        large multipart upload is spooled to disk): call it inside the job that runs in the thread pool."""
        if self.upload is None:
            return self.raw or b""
        self.upload.file.seek(0)
        return self.upload.file.read()


IMAGE_DESCRIPTION = "The picture: JPEG, PNG, GIF, WebP, BMP or TIFF (sniffed from its bytes, whatever its declared type)."
RAW_MEDIA_TYPES = ("application/octet-stream", "image/")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_HOW = (
    "send the picture as multipart/form-data in a file field named 'image', or as the raw request body "
    "with Content-Type image/* or application/octet-stream"
)


async def image_body(
    request: Request,
    image: Annotated[UploadFile | None, File(description=IMAGE_DESCRIPTION)] = None,
) -> ImageBody:
    """The picture, from the multipart field ``image`` or, with an image or octet-stream Content-Type (or
    none), from the raw body - as TorchServe's ``curl -T photo.jpg`` sends it.  Starlette's form parsing leaves
    a non-form body unread, so it is read here (through the body size limit)."""
    if image is not None:
        return ImageBody(upload=image)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media.startswith(RAW_MEDIA_TYPES):
        return ImageBody(raw=await request.body())
    if not media and (raw := await request.body()):  # no Content-Type (curl -T): octet-stream, RFC 9110 8.3
        return ImageBody(raw=raw)
    if media and media not in _FORMS:
        raise UnsupportedMediaType(f"Content-Type {media} is not accepted: {_HOW}", field="image")
    raise InvalidParameter(f"image: Field required ({_HOW})", field="image")


ImageUpload = Annotated[ImageBody, Depends(image_body)]
