"""HTTP-only helpers shared by the inference routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query, UploadFile
from fastapi.responses import Response

from app.errors import ServiceError
from app.observability import Metrics
from app.schemas import OutputFormat, Timings

T = TypeVar("T")

ModelName = Annotated[str | None, Query(description="Model to use (GET /models lists them); default: the task's default.")]
Overlay = Annotated[bool, Query(description="Include a PNG picture of the result (base64) in the JSON.")]
Format = Annotated[
    OutputFormat, Query(description="`json` (default) or `png`: answer with the overlay picture itself (image/png).")
]
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "The result as JSON, or as a PNG picture when format=png."}}


def read_upload(upload: UploadFile) -> bytes:
    """The uploaded bytes (the body size limit is enforced upstream, while streaming)."""
    upload.file.seek(0)
    return upload.file.read()


def run_observed(metrics: Metrics, model: str, job: Callable[[], T], timings: Callable[[T], Timings]) -> T:
    """Run an inference job, recording its stage timings or its failure reason."""
    try:
        result = job()
    except ServiceError as exc:
        metrics.inference_failure.labels(model, exc.slug).inc()
        raise
    t = timings(result)
    metrics.preprocess.labels(model).observe(t.decode_ms / 1000)
    metrics.compute.labels(model).observe(t.inference_ms / 1000)
    metrics.postprocess.labels(model).observe(t.postprocess_ms / 1000)
    metrics.inference_success.labels(model).inc()
    return result


def png_response(png: bytes | None) -> Response:
    assert png is not None
    return Response(content=png, media_type="image/png")
