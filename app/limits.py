"""Admission control: a bounded number of requests in inference, a bounded queue, a wait timeout; the
decode memory the requests in inference share; and an upload size limit enforced while the body streams in."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import Overloaded, RequestTimeout
from app.observability import Metrics


class Ticket:
    """A request's place, taken by :meth:`InferenceLimiter.admit` before its body is read: while it is held the
    request may read its body and wait for an inference slot, until ``deadline`` (``time.monotonic()``)."""

    def __init__(self, limiter: InferenceLimiter, deadline: float) -> None:
        self._limiter = limiter
        self.deadline = deadline
        self._held = True

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if self._held:
            self._held = False
            self._limiter.admitted -= 1
            self._limiter.publish()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for an inference slot until the deadline (503 beyond), hold it for the block, then release
        the slot and the place."""
        try:
            await self._limiter.acquire(self.deadline)
            try:
                yield
            finally:
                self._limiter.free()
        finally:
            self.release()


class InferenceLimiter:
    """Admission control: at most ``max_concurrency`` requests in inference and ``max_queue`` more admitted
    (reading their body or waiting for a slot); beyond, a request is refused with 503 + Retry-After before its
    body is read - so at most ``(max_concurrency + max_queue) x max_upload_bytes`` of bodies are in flight.  An
    admitted request has ``timeout_s`` to send its body and get a slot (503 beyond)."""

    def __init__(
        self, max_concurrency: int, max_queue: int, timeout_s: float, retry_after_s: int, metrics: Metrics
    ) -> None:
        self._sem = asyncio.Semaphore(max_concurrency)
        self.places = max_concurrency + max_queue
        self.timeout_s = timeout_s
        self.retry = {"Retry-After": str(retry_after_s)}
        self.metrics = metrics
        self.admitted = 0  # places taken: in inference, waiting for a slot, or reading a body
        self.active = 0  # in inference

    @property
    def waiting(self) -> int:
        return self.admitted - self.active

    def admit(self) -> Ticket:
        """A place for one more request, or 503 when all are taken."""
        if self.admitted >= self.places:
            raise Overloaded(
                f"{self.active} requests in inference and {self.waiting} queued; retry later", headers=self.retry
            )
        self.admitted += 1
        self.publish()
        return Ticket(self, time.monotonic() + self.timeout_s)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admission and a slot at once, for a request whose body is already read."""
        async with self.admit().slot():
            yield

    async def acquire(self, deadline: float) -> None:
        start = time.perf_counter()
        if self._sem.locked():  # ``locked`` is true while anyone waits, so FIFO order holds
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._sem.acquire()
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"no inference slot within {self.timeout_s:g} s; retry later", headers=self.retry
                ) from exc
        else:  # a free slot and nobody queued: taken without suspending
            await self._sem.acquire()
        self.metrics.queue_time.observe(time.perf_counter() - start)
        self.active += 1
        self.publish()

    def free(self) -> None:
        self.active -= 1
        self._sem.release()
        self.publish()

    def publish(self) -> None:
        self.metrics.inflight.set(self.active)
        self.metrics.pending.set(self.waiting)


class DecodeMemory:
    """The memory the decoded images of all jobs in flight may take together (``LOCSVC_MAX_DECODE_BYTES``).

    A job takes its decode's cost (computed from the header, before decoding) and gives it back when it ends
    (:meth:`app.services.common.Deadline.close`); a job that finds too little free waits for the others, until
    its deadline. Without it, each of ``max_concurrency`` jobs could hold a whole budget at once. Thread-safe:
    jobs run in the thread pool."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._cond = threading.Condition()

    @property
    def free(self) -> int:
        return self._free

    def take(self, nbytes: int, until: float) -> bool:
        """Take ``nbytes`` as soon as that much is free, waiting until ``until`` (``time.monotonic()``) at the
        latest; False if it was not free by then (nothing taken)."""
        if not 0 <= nbytes <= self.total:
            raise ValueError(f"cannot take {nbytes} of {self.total} bytes")
        with self._cond:
            if not self._cond.wait_for(lambda: self._free >= nbytes, max(0.0, until - time.monotonic())):
                return False
            self._free -= nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Give back ``nbytes`` that :meth:`take` took, and wake the jobs waiting for them."""
        with self._cond:
            self._free += nbytes
            self._cond.notify_all()


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from Content-Length, or as soon as the streamed body passes
    the limit - never after buffering the whole upload.

    And a graceful close for every answer given before its request's body is in (a 413, a 503 before the body
    is read): the rest of the body is read and discarded before the answer's last bytes go out, up to
    ``linger_bytes`` and ``linger_s`` (as nginx's lingering close).  Otherwise a client that writes its whole
    body before reading - Python's urllib, which also asks the server to close the connection - gets a
    connection reset instead of the answer, since closing a socket with unread data resets it."""

    def __init__(self, app: ASGIApp, max_bytes: int, linger_bytes: int = 64 << 20, linger_s: float = 2.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.linger_bytes = linger_bytes
        self.linger_s = linger_s

    def _error(self) -> HTTPException:
        return HTTPException(413, f"request body is over the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        body_done = scope.get("method") in ("GET", "HEAD")

        async def limited() -> Message:
            nonlocal seen, body_done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise self._error()
            else:
                body_done = True
            return message

        async def lingering_send(message: Message) -> None:
            nonlocal body_done
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not body_done:
                await self._drain(receive)
                body_done = True
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, lingering_send)
            return
        await self.app(scope, limited, lingering_send)

    async def _drain(self, receive: Receive) -> None:
        """Read and discard what is left of the request body, within the linger bounds."""
        drained = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.linger_s):
                while drained <= self.linger_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        from app.problems import problem_response

        response = problem_response(
            scope.get("path", ""), 413, "Payload too large", "payload-too-large", self._error().detail, "image"
        )
        await response(scope, receive, send)
