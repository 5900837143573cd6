"""One error shape for the whole API: RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.errors import ServiceError
from app.observability import request_id_var

PROBLEM_BASE = "https://localization-service.dev/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("app.errors")
_HTTP_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
}


def problem_response(
    instance: str,
    status: int,
    title: str,
    slug: str,
    detail: str,
    field: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if field is not None:
        body["field"] = field
    if errors is not None:
        body["errors"] = errors
    body["request_id"] = request_id_var.get()
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    log.info("refused", extra={"status": exc.status, "reason": exc.slug, "detail": exc.detail})
    headers = dict(exc.headers or {})
    if exc.status == 503:  # every 503 is worth a retry: a job past its deadline, or one that waited for memory, too
        headers.setdefault("Retry-After", str(request.app.state.settings.retry_after_s))
    return problem_response(request.url.path, exc.status, exc.title, exc.slug, exc.detail, exc.field, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    title = _HTTP_TITLES.get(exc.status_code, "Error")
    slug = title.lower().replace(" ", "-")
    return problem_response(
        request.url.path, exc.status_code, title, slug, str(exc.detail), headers=dict(exc.headers or {})
    )


def _loc_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": _loc_field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
    first = errors[0] if errors else {"field": "request", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}"
    return problem_response(
        request.url.path, 422, "Invalid request", "invalid-request", detail, str(first["field"]), errors
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")
    return problem_response(
        request.url.path,
        500,
        "Internal Server Error",
        "internal",
        "unexpected error; the request id identifies it in the logs",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for code, desc in {
        401: "Missing or wrong API key (when auth is on).",
        404: "Unknown model.",
        413: "Upload or decoded image over the configured limits.",
        415: "Not an image, or an unsupported format (sniffed from the bytes).",
        422: "Corrupt image, or a bad parameter (the field is named).",
        503: "Overloaded or not ready; retry after the Retry-After header.",
    }.items()
}
