"""The app factory: routers, error handlers, middleware, and a lifespan that loads the models."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import import_module
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.config import Settings
from app.core.imaging import configure_pillow
from app.deps import require_api_key
from app.errors import ConfigurationError
from app.limits import BodySizeLimitMiddleware, DecodeMemory, InferenceLimiter
from app.observability import Metrics, ObservabilityMiddleware, configure_logging
from app.problems import PROBLEM_RESPONSES, install_error_handlers
from app.registry import Registry
from app.routers import meta, page
from app.runtime import cache_problem, check_provider
from app.schemas import Problem
from app.tasks import TASKS, Tasks

log = logging.getLogger("app")

DESCRIPTION = """
What is in an image, and where: **/localize** (a class and its regressed box), **/cam** (Class
Activation Maps and the boxes they imply, for any class), **/pose** (14 body joints).

Upload the picture as `multipart/form-data` in a field named `image`, or as the raw request body
(`Content-Type: image/*` or `application/octet-stream`).  Every box and point is in
pixels of the full image after its EXIF orientation; boxes come as `(r, c, h, w)` (row, column of
the upper-left corner, height, width), as corners `x1, y1, x2, y2`, and normalized to [0, 1].
Errors are RFC 9457 problem details (`application/problem+json`) naming the offending `field`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_pillow(settings.max_image_pixels)
    app.state.limiter = InferenceLimiter(
        settings.max_concurrency,
        settings.max_queue,
        settings.queue_timeout_s,
        settings.retry_after_s,
        app.state.metrics,
    )
    app.state.decode_memory = DecodeMemory(settings.max_decode_bytes)
    registry = await anyio.to_thread.run_sync(Registry.load, settings, app.state.tasks)
    app.state.registry = registry
    app.state.metrics.models_loaded.set(len(registry.models))
    log.info("ready", extra={"models": sorted(registry.models), "auth": "on" if settings.auth else "off"})
    if not settings.auth:
        log.warning("authentication is off (LOCSVC_AUTH=off): every endpoint is open to whoever reaches this port")
    try:
        yield
    finally:
        app.state.shutting_down = True
        app.state.registry = None
        log.info("stopped")


def create_app(settings: Settings | None = None, tasks: Tasks = TASKS) -> FastAPI:
    """The app for ``settings``, serving ``tasks`` (the table of :mod:`app.tasks`); :class:`ConfigurationError`
    when auth is on and no API key is set, or when the execution provider is not installed."""
    settings = settings or Settings()
    if settings.auth and not settings.api_key:
        raise ConfigurationError(
            "LOCSVC_API_KEY is not set: set it (clients then send it in X-API-Key), or set LOCSVC_AUTH=off to serve "
            "without authentication"
        )
    check_provider(settings)
    # Here rather than in the lifespan: uvicorn imports the app before it logs its start-up lines.
    configure_logging(settings.log_level, settings.log_json)
    if (problem := cache_problem(settings)) is not None:
        log.warning("OpenVINO's model cache is off: %s (each start compiles the models)", problem)
        settings = settings.model_copy(update={"openvino_cache_dir": None})
    app = FastAPI(
        title="Localization inference service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tasks = tasks
    app.state.metrics = Metrics()
    app.state.registry = None
    app.state.shutting_down = False

    # The auth dependency (and its security scheme in OpenAPI) exists only while auth is on.
    auth = [Depends(require_api_key)] if settings.auth else []
    for spec in tasks:
        router: APIRouter = import_module(spec.router).router
        app.include_router(router, dependencies=auth, responses=PROBLEM_RESPONSES)
    app.include_router(meta.router)
    app.include_router(meta.protected, dependencies=auth, responses={401: PROBLEM_RESPONSES[401]} if auth else None)
    app.include_router(page.router)
    install_error_handlers(app)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema()
            for item in schema["paths"].values():
                form = item.get("post", {}).get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
                ref = form.get("schema", {})
                if "properties" in ref and "$ref" in ref:  # the route's own form schema (openapi_extra) wins
                    components.pop(ref.pop("$ref").rsplit("/", 1)[-1], None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
