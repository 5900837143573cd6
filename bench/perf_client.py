"""A lean closed-loop HTTP/1.1 load client for ``bench.perf`` (asyncio streams, keep-alive).

On a 2-core box the client shares the CPU with the server it measures: every millisecond the client
spends building a multipart body or parsing a response is taken from the server.  This client builds
the request bytes once (headers + multipart body) and, per request, writes them and reads the status
line, the headers and a ``Content-Length`` (or chunked) body - nothing else.  Same interface and result
as ``bench.loadgen.run_load`` (httpx), which ``bench.perf --client httpx`` uses instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.loadgen import LoadResult

BOUNDARY = "perf0boundary0d41d8cd98f00b204e98"


def build_request(
    host: str, path: str, image: bytes, params: dict[str, Any] | None = None, field_name: str | None = "image"
) -> bytes:
    """The whole POST, ready to be written as is: multipart/form-data with one file field ``field_name``, or
    the image as the raw body (``Content-Type: image/jpeg``) when ``field_name`` is None."""
    target = path + (f"?{urlencode(params)}" if params else "")
    if field_name is None:
        body, content_type = image, "image/jpeg"
    else:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; filename="image.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body, content_type = head + image + f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"
    headers = (
        f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-perf\r\nAccept: */*\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return headers + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) after reading one whole response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip().lower()
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, fields.get("connection") != "close"


async def run_load_lean(
    url: str,
    endpoint: str,
    image: bytes,
    concurrency: int,
    duration_s: float,
    params: dict[str, Any] | None = None,
    max_requests: int | None = None,
    field_name: str | None = "image",
) -> LoadResult:
    """Closed loop: ``concurrency`` connections, each posting and waiting for the answer until the time is up."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(f"{host}:{port}", endpoint, image, params, field_name)
    result = LoadResult(endpoint, concurrency, 0.0)
    deadline = time.perf_counter() + duration_s
    sent = 0

    async def worker() -> None:
        nonlocal sent
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
                sent += 1
                t0 = time.perf_counter()
                try:
                    if conn is None:
                        conn = await asyncio.open_connection(host, port)
                    reader, writer = conn
                    writer.write(request)
                    await writer.drain()
                    status, keep = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                    result.transport_errors += 1
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    continue
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                if not keep:
                    writer.close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - start
    return result
