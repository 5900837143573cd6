"""Request-scoped resources, injected through ``Annotated`` aliases.

An inference request goes: :func:`admission` (a place, or 503 before a byte of the body is read) ->
:func:`image_body` (the body, read within the place's deadline) -> :meth:`InferenceContext.run` (a slot, then
the job under one deadline)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from app.config import Settings
from app.errors import BodyTimeout, InvalidParameter, NotReady, ServiceError, Unauthorized, UnsupportedMediaType
from app.limits import DecodeMemory, Ticket
from app.observability import Metrics
from app.registry import Registry
from app.services.common import Deadline, Outcome

R = TypeVar("R")

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Needed when the service runs with LOCSVC_API_KEY set."
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_registry(request: Request) -> Registry:
    registry: Registry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        raise NotReady("models are still loading", headers={"Retry-After": str(get_settings(request).retry_after_s)})
    return registry


async def admission(request: Request) -> AsyncIterator[Ticket]:
    """A place for this request (503 when all are taken), before its body is read; given back when the route
    returns, if the inference has not already given it back."""
    ticket: Ticket = request.app.state.limiter.admit()
    try:
        yield ticket
    finally:
        ticket.release()


AdmissionDep = Annotated[Ticket, Depends(admission, scope="function")]


@dataclass(frozen=True)
class InferenceContext:
    """What an inference route needs: the registry, settings, metrics, its admission ticket, and the decode
    memory the jobs share."""

    registry: Registry
    settings: Settings
    metrics: Metrics
    ticket: Ticket
    memory: DecodeMemory

    async def run(self, model: str, job: Callable[[Deadline], Outcome[R]]) -> Outcome[R]:
        """Wait for an inference slot (until the ticket's deadline), then run the blocking job (decode, fit,
        onnxruntime, post-processing) in the thread pool under one deadline, ``job_timeout_s`` from the moment
        it has its slot, and record it.  The slot, and the decode memory the job took, are free again before
        the response is serialized and sent."""
        async with self.ticket.slot():
            deadline = Deadline.start(self.settings.job_timeout_s, self.memory)
            return await anyio.to_thread.run_sync(self.observe, model, job, deadline)

    def observe(self, model: str, job: Callable[[Deadline], Outcome[R]], deadline: Deadline) -> Outcome[R]:
        """Run an inference job, recording its stage timings, or its failure reason."""
        try:
            result = job(deadline)
        except ServiceError as exc:
            self.metrics.inference_failure.labels(model, exc.slug).inc()
            raise
        finally:
            deadline.close()
        t = result.timings
        self.metrics.decodes.labels(result.format).inc()
        self.metrics.preprocess.labels(model).observe(t.decode_ms / 1000)
        self.metrics.compute.labels(model).observe(t.inference_ms / 1000)
        self.metrics.postprocess.labels(model).observe(t.postprocess_ms / 1000)
        self.metrics.inference_success.labels(model).inc()
        return result


async def inference_context(request: Request, ticket: AdmissionDep) -> InferenceContext:
    """Check readiness (503 while the models load).  ``async``: FastAPI runs a plain-``def`` dependency
    in the thread pool, a hop per request."""
    state = request.app.state
    return InferenceContext(get_registry(request), state.settings, state.metrics, ticket, state.decode_memory)


def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    expected = get_settings(request).api_key or ""
    if not key or not secrets.compare_digest(key.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header", field="X-API-Key")


MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
InferenceDep = Annotated[InferenceContext, Depends(inference_context)]


IMAGE_DESCRIPTION = (
    "The picture: JPEG, PNG, GIF, WebP, BMP or TIFF (sniffed from its bytes, whatever its declared type)."
)
RAW_MEDIA_TYPES = ("application/octet-stream", "image/")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_HOW = (
    "send the picture as multipart/form-data in a file field named 'image', or as the raw request body "
    "with Content-Type image/* or application/octet-stream"
)


async def image_body(request: Request, ticket: AdmissionDep) -> bytes:
    """The picture's bytes, read once the request has its place: the multipart field ``image`` or, with an
    image or octet-stream Content-Type (or none: ``curl -T``, RFC 9110 8.3), the raw body - as TorchServe
    takes it.  The body streams through the size limit (413) and must be in before the ticket's deadline."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media and not media.startswith(RAW_MEDIA_TYPES) and media not in _FORMS:
        raise UnsupportedMediaType(f"Content-Type {media} is not accepted: {_HOW}", field="image")
    try:
        async with asyncio.timeout(max(0.0, ticket.deadline - time.monotonic())):
            if media == "multipart/form-data":
                return await _form_image(request, get_settings(request).max_upload_bytes)
            if media in _FORMS:  # a urlencoded form holds no file
                raise InvalidParameter(f"image: Field required ({_HOW})", field="image")
            data = await request.body()
    except TimeoutError as exc:
        raise BodyTimeout("the request body did not arrive in time", field="image") from exc
    if not data and not media:
        raise InvalidParameter(f"image: Field required ({_HOW})", field="image")
    return data


async def _form_image(request: Request, in_memory: int) -> bytes:
    """The ``image`` part of a multipart body, as ``request.form()`` parses it but spooled in memory up to
    ``in_memory`` bytes (the upload limit) instead of 1 MiB: a 3.8 MB part then skips the temporary file and
    its thread hops (p50 5-6 ms at c=1; admission bounds the bodies in flight)."""
    async with aclosing(request.stream()) as stream:
        parser = MultiPartParser(request.headers, stream, max_files=1, max_fields=16)
        parser.spool_max_size = in_memory
        try:
            form = await parser.parse()
        except MultiPartException as exc:  # what request.form() answers for a malformed body
            raise HTTPException(status_code=400, detail=exc.message) from exc
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise InvalidParameter(f"image: Field required ({_HOW})", field="image")
        return await image.read()
    finally:
        await form.close()


ImageUpload = Annotated[bytes, Depends(image_body)]
