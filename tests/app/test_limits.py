"""Admission control (503 + Retry-After) and the upload size limit (413)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.errors import Overloaded, PayloadTooLarge, RequestTimeout
from app.factory import create_app
from app.limits import DecodeMemory, InferenceLimiter
from app.observability import Metrics
from app.services.common import Deadline
from tests.conftest import encode, files, noise_image

pytestmark = pytest.mark.anyio


async def test_limiter_bounds_concurrency_and_queue() -> None:
    lim = InferenceLimiter(max_concurrency=1, max_queue=1, timeout_s=5, retry_after_s=2, metrics=Metrics())
    holder = lim.slot()
    await holder.__aenter__()
    second = lim.slot()  # kept referenced: a collected context manager would release its slot
    waiter = asyncio.create_task(second.__aenter__())
    await asyncio.sleep(0.01)
    assert lim.waiting == 1
    with pytest.raises(Overloaded) as exc:
        await lim.slot().__aenter__()
    assert exc.value.headers["Retry-After"] == "2"
    await holder.__aexit__(None, None, None)
    await asyncio.wait_for(waiter, 1)
    assert lim.active == 1 and lim.waiting == 0
    await second.__aexit__(None, None, None)
    assert lim.active == 0


async def test_limiter_times_out_waiting() -> None:
    lim = InferenceLimiter(max_concurrency=1, max_queue=5, timeout_s=0.05, retry_after_s=1, metrics=Metrics())
    async with lim.slot():
        with pytest.raises(RequestTimeout):
            async with lim.slot():
                pass
    assert lim.waiting == 0 and lim.active == 0


def test_decode_memory_waits_for_what_others_give_back() -> None:
    memory = DecodeMemory(100)
    assert memory.take(70, time.monotonic())
    assert not memory.take(40, time.monotonic() + 0.05)  # 30 free, and nobody gives any back in time
    assert memory.free == 30
    threading.Timer(0.05, memory.give, (70,)).start()
    t0 = time.monotonic()
    assert memory.take(40, t0 + 5)  # woken when the 70 come back, long before its deadline
    assert 0.03 < time.monotonic() - t0 < 2 and memory.free == 60
    with pytest.raises(ValueError):
        memory.take(101, time.monotonic() + 5)


def test_a_job_holds_its_decode_memory_until_it_ends() -> None:
    memory = DecodeMemory(100)
    job = Deadline.start(5, memory)
    job.reserve(60, "the first decode")
    job.reserve(30, "the second decode")
    assert memory.free == 10
    with pytest.raises(PayloadTooLarge, match="beside the 90 this request holds"):
        job.reserve(20, "a third decode")  # could never fit: waiting would only wait for itself
    other = Deadline.start(0.05, memory)
    with pytest.raises(RequestTimeout, match="decode memory"):
        other.reserve(20, "another job's decode")
    job.close()
    job.close()  # idempotent
    assert memory.free == 100
    other = Deadline.start(5, memory)
    other.reserve(20, "another job's decode")
    assert memory.free == 80
    Deadline.start(5).reserve(10**12, "outside a job")  # no shared memory: nothing held, nothing refused


async def test_requests_share_the_decode_memory(make_client: Any, jpeg: bytes) -> None:
    async with make_client(job_timeout_s=0.3) as client:
        memory: DecodeMemory = client._transport.app.state.decode_memory
        assert (await client.post("/cam", files=files(jpeg))).status_code == 200
        assert memory.free == memory.total  # given back when the job ended
        assert memory.take(memory.total, time.monotonic())  # other requests hold all of it
        r = await client.post("/localize", files=files(jpeg))
        assert r.status_code == 503 and "decode memory" in r.json()["detail"], r.text
        assert r.headers["retry-after"] == "1"  # LOCSVC_RETRY_AFTER_S, as on every 503
        memory.give(memory.total)
        assert (await client.post("/localize", files=files(jpeg))).status_code == 200
        assert memory.free == memory.total


@pytest.fixture
async def busy_app(tiny_models_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, InferenceLimiter]]:
    app = create_app(
        Settings(
            models_dir=tiny_models_dir,
            max_concurrency=1,
            max_queue=0,
            retry_after_s=3,
            max_upload_bytes=50_000,
            auth=False,
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c,
    ):
        yield c, app.state.limiter


async def test_overload_is_503_with_retry_after_then_recovers(
    busy_app: tuple[httpx.AsyncClient, InferenceLimiter], jpeg: bytes
) -> None:
    client, limiter = busy_app
    async with limiter.slot():  # someone else is in inference, and the queue holds nobody
        r = await client.post("/cam", files=files(jpeg))
        assert r.status_code == 503 and r.headers["retry-after"] == "3"
        assert r.json()["type"].endswith("/overloaded")
    assert (await client.post("/cam", files=files(jpeg))).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'locsvc_http_requests_total{method="POST",route="/cam",status="503"} 1.0' in metrics


async def test_upload_over_limit_is_413(busy_app: tuple[httpx.AsyncClient, InferenceLimiter]) -> None:
    client, _ = busy_app
    big = encode(noise_image(400, 400), "PNG")
    assert len(big) > 50_000
    r = await client.post("/cam", files=files(big, "big.png", "image/png"))
    assert r.status_code == 413 and r.json()["status"] == 413
    assert (await client.post("/cam", files=files(encode(noise_image(32, 32))))).status_code == 200


async def test_streamed_upload_over_limit_is_413_without_content_length(
    busy_app: tuple[httpx.AsyncClient, InferenceLimiter],
) -> None:
    client, _ = busy_app
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        for _ in range(100):  # 1 MB in 10 kB chunks, far past the 50 kB limit
            sent += 10_000
            yield b"\x00" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = await client.post("/cam", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    # Refused as the body passed the limit; the rest was read and discarded before the answer went out (a graceful
    # close: a client that writes its whole body before reading gets the 413, not a connection reset).
    assert sent == 1_000_000


async def test_an_answer_before_the_body_drains_it_within_bounds() -> None:
    """The drain reads at most ``linger_bytes`` of what is left: past that the answer goes out regardless."""
    from app.limits import BodySizeLimitMiddleware

    chunks = 0

    async def receive() -> dict[str, object]:
        nonlocal chunks
        chunks += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # a body that never ends

    async def app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"busy"})  # type: ignore[operator]

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    mw = BodySizeLimitMiddleware(app, max_bytes=10_000, linger_bytes=50_000, linger_s=5)  # type: ignore[arg-type]
    await mw({"type": "http", "method": "POST", "headers": []}, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert 50 <= chunks <= 52  # about linger_bytes read, then it stopped


async def test_inference_timeout_is_503(real_models_dir: Path, cat_jpeg: bytes) -> None:
    """An onnxruntime run over the per-request limit is terminated: 503, and the server goes on."""
    app = create_app(
        Settings(models_dir=real_models_dir, models=["efficientnet_lite0_imagenet"], job_timeout_s=0.001, auth=False)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        r = await client.post("/cam", files=files(cat_jpeg))
        assert r.status_code == 503 and r.json()["type"].endswith("/timeout"), r.text
        assert "retry" in r.json()["detail"]
        app.state.settings.job_timeout_s = 30.0
        assert (await client.post("/cam", files=files(cat_jpeg))).status_code == 200


async def test_not_ready_answers_retry_after_from_the_settings(tiny_models_dir: Path) -> None:
    app = create_app(Settings(models_dir=tiny_models_dir, retry_after_s=7, auth=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        # no lifespan yet: the models are not loaded
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        async with app.router.lifespan_context(app):
            assert (await c.get("/readyz")).status_code == 200
            app.state.shutting_down = True
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.headers["Retry-After"] == "7"
