"""Domain errors: each carries its HTTP status; one handler turns them into RFC 9457 problem details.

Pure Python (no FastAPI import), so the numpy-only modules can raise them.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """Base of every error a client may see.  ``field`` names the offending request field."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(self, detail: str, *, field: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})


class InvalidParameter(ServiceError):
    status, title, slug = 422, "Invalid parameter", "invalid-parameter"


class InvalidImage(ServiceError):
    """The bytes claim to be an image but cannot be decoded (corrupt, truncated, empty)."""

    status, title, slug = 422, "Invalid image", "invalid-image"


class UnsupportedMediaType(ServiceError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class PayloadTooLarge(ServiceError):
    """Upload bytes or decoded pixel count over the configured limits."""

    status, title, slug = 413, "Payload too large", "payload-too-large"


class BodyTimeout(ServiceError):
    """The request body did not arrive within the time a request may hold its place."""

    status, title, slug = 408, "Request Timeout", "body-timeout"


class ConfigurationError(RuntimeError):
    """Settings the service refuses to start with."""


class ModelNotFound(ServiceError):
    status, title, slug = 404, "Model not found", "model-not-found"


class Unauthorized(ServiceError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Overloaded(ServiceError):
    status, title, slug = 503, "Service overloaded", "overloaded"


class NotReady(ServiceError):
    status, title, slug = 503, "Not ready", "not-ready"


class RequestTimeout(ServiceError):
    status, title, slug = 503, "Request timed out", "timeout"
