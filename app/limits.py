"""Admission control: a bounded number of requests in inference, a bounded queue, a wait timeout;
and an upload size limit enforced while the body streams in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, RequestTimeout
from app.observability import Metrics


class InferenceLimiter:
    """At most ``max_concurrency`` holders; at most ``max_queue`` waiters; beyond -> 503 + Retry-After."""

    def __init__(self, max_concurrency: int, max_queue: int, timeout_s: float, retry_after_s: int, metrics: Metrics) -> None:
        self._sem = asyncio.Semaphore(max_concurrency)
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.retry = {"Retry-After": str(retry_after_s)}
        self.metrics = metrics
        self.waiting = 0
        self.active = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if not self._sem.locked():
            # A free slot and nobody queued (``locked`` is true while anyone waits, so FIFO order holds):
            # taken without suspending.
            await self._sem.acquire()
            self.metrics.queue_time.observe(0.0)
        else:
            await self._wait()
        self.active += 1
        self.metrics.inflight.set(self.active)
        try:
            yield
        finally:
            self.active -= 1
            self.metrics.inflight.set(self.active)
            self._sem.release()

    async def _wait(self) -> None:
        if self.waiting >= self.max_queue:
            raise Overloaded(f"{self.active} requests in inference and {self.waiting} queued; retry later", headers=self.retry)
        self.waiting += 1
        self.metrics.pending.set(self.waiting)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task per wait, unlike wait_for on 3.11
                await self._sem.acquire()
        except TimeoutError as exc:
            raise RequestTimeout(f"no inference slot within {self.timeout_s:g} s; retry later", headers=self.retry) from exc
        finally:
            self.waiting -= 1
            self.metrics.pending.set(self.waiting)
        self.metrics.queue_time.observe(time.perf_counter() - start)


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from Content-Length, or as soon as the streamed
    body passes the limit - never after buffering the whole upload."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> HTTPException:
        return HTTPException(413, f"request body is over the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        from app.problems import problem_response

        response = problem_response(scope.get("path", ""), 413, "Payload too large", "payload-too-large", self._error().detail, "image")
        await response(scope, receive, send)
