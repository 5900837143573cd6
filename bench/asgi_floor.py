"""How close can *any* ASGI server get to the in-process limit here?  The service next to a bare ASGI callable.

    python -m bench.asgi_floor --endpoint /localize --concurrency 4 --rounds 3 --seconds 8

Three servers on the same uvicorn, driven by the same lean client, interleaved round by round:

* ``service``: ``app.main:app`` (FastAPI, the middlewares, the multipart field ``image``);
* ``service_raw``: the same app, the image as the raw body (no multipart parsing);
* ``bare``: :func:`app_factory` - the same service function (``run_localize`` / ``run_cam`` / ``run_pose``,
  default parameters and model) behind a minimal ASGI callable: raw body, the
  same admission limit, one thread hop, ``model_dump_json``.  No routing, no dependencies, no middleware.

Reported per server: requests/s and the server's CPU per request (user + system of its process tree).  Both
servers (``bench.server``) get the ``LOCSVC_*`` of the environment.  The bare
callable is a measuring device, not a way to serve: it has no validation, limits, errors or metrics.  What
separates it from the in-process limit is uvicorn, the kernel's loopback sockets and the thread hop; what
separates the service from it is the framework and our middlewares.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


def app_factory() -> ASGIApp:
    """The bare ASGI callable (``uvicorn --factory bench.asgi_floor:app_factory``), serving whichever of
    ``/cam``, ``/localize``, ``/pose`` the path names, with ``LOCSVC_*`` settings from the environment;
    ``/readyz`` 200 (the models are loaded before uvicorn listens)."""
    import anyio

    from app.config import Settings
    from app.registry import Registry
    from bench.perf_inproc import service_job

    settings = Settings()
    registry = Registry.load(settings)  # also limits OpenBLAS, as in the service
    limiter = anyio.CapacityLimiter(settings.max_concurrency)
    jobs = {ep: service_job(registry, ep) for ep in ("/cam", "/localize", "/pose") if _serves(registry, ep)}

    async def app(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/readyz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        job = jobs.get(scope["path"])
        if job is None:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b"".join(chunks)
        async with limiter:
            outcome: Any = await anyio.to_thread.run_sync(job, body, settings)
        payload = outcome.response.model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def _serves(registry: Any, endpoint: str) -> bool:
    from app.sidecar import Task

    try:
        registry.get(Task(endpoint.strip("/")), None)
    except Exception:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    import asyncio

    from bench.loadgen import run_load
    from bench.photos import ENDPOINT_PHOTO, IMAGES, photo_jpeg
    from bench.server import Server, environ_settings

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoint", default="/localize", choices=["/cam", "/localize", "/pose"])
    ap.add_argument("--image", default="small", choices=sorted(IMAGES))
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server and round")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "asgi-floor.json")
    args = ap.parse_args(argv)

    image = photo_jpeg(*IMAGES[args.image], ENDPOINT_PHOTO.get(args.endpoint, "chelsea"))
    env = environ_settings()
    logs = args.out.parent
    started: list[Server] = []
    try:
        service = Server(logs / "asgi-floor-service.log", env, log_level="warning")
        started.append(service)
        bare = Server(
            logs / "asgi-floor-bare.log",
            env,
            app="bench.asgi_floor:app_factory",
            factory=True,
            log_level="warning",
            name="bare",
        )
        started.append(bare)
        for server in started:
            server.wait_ready()
        # name: (server, multipart field or None for the raw body); service_raw is the service's own process
        contenders = {"service": (service, "image"), "service_raw": (service, None), "bare": (bare, None)}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
        for rnd in range(args.rounds):
            for name, (server, field) in contenders.items():
                asyncio.run(run_load(server.url, args.endpoint, image, args.concurrency, 1.0, field_name=field))
                c0, t0 = server.cpu_s(), time.perf_counter()
                r = asyncio.run(
                    run_load(server.url, args.endpoint, image, args.concurrency, args.seconds, field_name=field)
                )
                c1, dt = server.cpu_s(), time.perf_counter() - t0
                ok = r.statuses.get(200, 0)
                row = {
                    "rps": ok / dt,
                    "cpu_ms_per_request": (c1 - c0) / ok * 1000 if ok else float("nan"),
                    "errors": sum(r.statuses.values()) - ok + r.transport_errors,
                }
                results[name].append(row)
                print(
                    f"round {rnd + 1}/{args.rounds} {name:12s} {row['rps']:7.1f} req/s  {row['cpu_ms_per_request']:6.2f} ms CPU/req",
                    flush=True,
                )
    finally:
        for server in started:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    for name, rows in results.items():
        rps = [r["rps"] for r in rows]
        cpu = [r["cpu_ms_per_request"] for r in rows]
        print(f"{name:12s} req/s {' '.join(f'{v:.1f}' for v in rps)}   CPU ms/req {' '.join(f'{v:.2f}' for v in cpu)}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
