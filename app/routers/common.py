"""HTTP-only helpers shared by the inference routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, UploadFile
from fastapi.responses import Response

from app.schemas import OutputFormat

ModelName = Annotated[str | None, Query(description="Model to use (GET /models lists them); default: the task's default.")]
Overlay = Annotated[bool, Query(description="Include a PNG picture of the result (base64) in the JSON.")]
Format = Annotated[
    OutputFormat, Query(description="`json` (default) or `png`: answer with the overlay picture itself (image/png).")
]
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "The result as JSON, or as a PNG picture when format=png."}}


def read_upload(upload: UploadFile) -> bytes:
    """The uploaded bytes (the body size limit is enforced upstream, while streaming).  Blocking (a
    large upload is spooled to disk): call it inside the job that runs in the thread pool."""
    upload.file.seek(0)
    return upload.file.read()


def png_response(png: bytes | None) -> Response:
    assert png is not None
    return Response(content=png, media_type="image/png")
