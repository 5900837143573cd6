"""HTTP-only helpers shared by the inference routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Query
from fastapi.responses import Response

from app.deps import IMAGE_DESCRIPTION, InferenceContext
from app.model import LoadedModel
from app.schemas import OutputFormat
from app.services.common import Outcome
from app.tasks import TaskSpec

M = TypeVar("M", bound=LoadedModel)
P = TypeVar("P")
R = TypeVar("R")

ModelName = Annotated[
    str | None, Query(description="Model to use (GET /models lists them); default: the task's default.")
]
Overlay = Annotated[bool, Query(description="Include a PNG picture of the result (base64) in the JSON.")]
Format = Annotated[
    OutputFormat, Query(description="`json` (default) or `png`: answer with the overlay picture itself (image/png).")
]
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The result as JSON, or as a PNG picture when format=png."}
}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FORM = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": IMAGE_DESCRIPTION,
        }
    },
}
# The request body of the inference routes as app.deps.image_body reads it: the multipart field `image`
# (required - FastAPI only sees an optional form field), or the raw body.  FastAPI merges this into the
# operation; app.factory drops the then unused generated form schema.
IMAGE_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _FORM},
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


async def serve(
    ctx: InferenceContext,
    spec: TaskSpec[M, P, R],
    name: str | None,
    image: bytes,
    params: Callable[[M], P],
    format: OutputFormat,
) -> R | Response:
    """The one way through an inference route: the model (named, or the task's default), the job's parameters
    for it, the job in an inference slot under its deadline, and the answer in the asked-for format."""
    model = ctx.registry.get(spec, name)
    job_params = params(model)
    outcome = await ctx.run(model.name, lambda deadline: spec.run(model, image, job_params, ctx.settings, deadline))
    return answer(outcome, format)


def draws(overlay: bool, format: OutputFormat) -> tuple[bool, bool]:
    """(draw the overlay, embed it in the JSON) for the ``overlay`` and ``format`` query parameters."""
    return overlay or format is OutputFormat.png, overlay and format is OutputFormat.json


def answer(outcome: Outcome[R], format: OutputFormat) -> R | Response:
    """The job's typed response, or with ``format=png`` its overlay picture itself."""
    if format is OutputFormat.png and outcome.png is not None:
        return Response(content=outcome.png, media_type="image/png")
    return outcome.response
