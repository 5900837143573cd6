"""HTTP-only helpers shared by the inference routers."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Query
from fastapi.responses import Response

from app.deps import IMAGE_DESCRIPTION
from app.schemas import OutputFormat
from app.services.common import Outcome

R = TypeVar("R")

ModelName = Annotated[str | None, Query(description="Model to use (GET /models lists them); default: the task's default.")]
Overlay = Annotated[bool, Query(description="Include a PNG picture of the result (base64) in the JSON.")]
Format = Annotated[
    OutputFormat, Query(description="`json` (default) or `png`: answer with the overlay picture itself (image/png).")
]
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "The result as JSON, or as a PNG picture when format=png."}}


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


def answer(outcome: Outcome[R], format: OutputFormat) -> R | Response:
    """The job's typed response, or with ``format=png`` its overlay picture itself."""
    if format is OutputFormat.png and outcome.png is not None:
        return Response(content=outcome.png, media_type="image/png")
    return outcome.response
