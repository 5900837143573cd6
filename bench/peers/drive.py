"""Starting, warming up and skipping the peers of ``bench.perf``, each on a free loopback port.

* :func:`start_bento`: ``bentoml serve SERVICE`` from BentoML's own venv (``.venv-bento``), telemetry off;
* :func:`start_bento_service`: the ``bento`` contender, :mod:`bench.bento_service` (the service's own pipeline
  and functions served by BentoML), warmed up; ``None`` when it does not start; :func:`bento_budget`: its
  workers and threads;
* :func:`start_peer`: one of :data:`PEERS`, what a user would run instead (:mod:`bench.peers`);
* :func:`start_peers`: those named, each warmed up, the ones that fail to start left out;
* :func:`warm_up`: a few requests per endpoint and image before any is timed (the service's too).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from bench.server import LOOPBACK, ROOT, Server, free_port

PEERS = ("fastapi", "bento_default", "bento_tuned")


def warm_up(url: str, images: Mapping[tuple[str, str], Path], paths: Mapping[str, str], n: int = 3) -> None:
    """``n`` multipart requests per image (``images``: (endpoint, name) -> file) of each endpoint in ``paths``
    (endpoint -> the path with its query that a contender posts to)."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for ep, target in paths.items():
            for (e, _), path in images.items():
                if e == ep:
                    for _ in range(n):
                        r = client.post(target, files={"image": ("image.jpg", path.read_bytes(), "image/jpeg")})
                        r.raise_for_status()


def start_bento(
    python: Path,
    env: dict[str, str],
    workers: int,
    threads: int,
    log_path: Path,
    timeout_s: float = 180.0,
    service: str = "bench.bento_service:Svc",
    extra_env: dict[str, str] | None = None,
) -> Server:
    """``bentoml serve SERVICE`` from BentoML's own venv, telemetry off."""
    port = free_port()
    bento_env = (
        env
        | {
            "BENTOML_DO_NOT_TRACK": "true",
            "BENTOML_HOME": str(ROOT / "artifacts" / "bentoml-home"),
            "PERF_BENTO_WORKERS": str(workers),
            "PERF_BENTO_THREADS": str(threads),
        }
        | (extra_env or {})
    )
    cmd = [str(python), "-m", "bentoml", "serve", service, "--host", LOOPBACK, "--port", str(port)]
    return Server(log_path, bento_env, port=port, command=cmd, name="bentoml").wait_ready(timeout_s, poll_s=0.01)


def bento_budget(args: argparse.Namespace, max_concurrency: int) -> tuple[int, int]:
    """BentoML (workers, threads): by default the service's processes and requests in inference at once."""
    return args.bento_workers or args.workers, args.bento_threads or max_concurrency


def start_bento_service(
    python: Path,
    env: dict[str, str],
    workers: int,
    threads: int,
    log_dir: Path,
    images: Mapping[tuple[str, str], Path],
    paths: Mapping[str, str],
) -> Server | None:
    """:mod:`bench.bento_service` with ``workers`` x ``threads`` and the service's ``env`` (log
    ``log_dir/perf-bento.log``), warmed up on ``paths``; ``None`` (and a line on stdout) when it fails."""
    bento: Server | None = None
    try:
        bento = start_bento(python, env, workers, threads, log_dir / "perf-bento.log")
        print(
            f"bentoml ready in {bento.ready_s:.2f} s at {bento.url} (workers={workers}, threads={threads})", flush=True
        )
        warm_up(bento.url, images, paths)
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"BentoML peer skipped: {exc}", flush=True)
        if bento is not None:
            bento.stop()
        return None
    return bento


def start_peer(name: str, python: Path, bento_threads: int, log_path: Path, timeout_s: float = 180.0) -> Server:
    """A peer of ``bench.peers``: ``fastapi`` (``uvicorn bench.peers.fastapi_app:app``, uvicorn's defaults, from
    this venv), ``bento_default`` or ``bento_tuned`` (``bentoml serve bench.peers.bento_naive:Svc``, the latter
    with ``threads=bento_threads``)."""
    if name == "fastapi":
        return Server(log_path, app="bench.peers.fastapi_app:app", name="fastapi peer").wait_ready(
            timeout_s, poll_s=0.01, path="/docs"
        )
    extra = {"PEER_BENTO_THREADS": str(bento_threads)} if name == "bento_tuned" else {}
    return start_bento(python, {}, 1, 1, log_path, timeout_s, service="bench.peers.bento_naive:Svc", extra_env=extra)


def start_peers(
    names: Iterable[str],
    python: Path,
    bento_threads: int,
    log_dir: Path,
    images: Mapping[tuple[str, str], Path],
    paths: Mapping[str, Mapping[str, str]],
) -> dict[str, Server]:
    """The peers ``names`` started (logs ``log_dir/perf-<name>.log``), each warmed up on ``paths[name]``; one
    that fails to start or to answer is stopped and left out."""
    peers: dict[str, Server] = {}
    try:
        for name in names:
            try:
                peer = start_peer(name, python, bento_threads, log_dir / f"perf-{name}.log")
                print(f"{name} ready in {peer.ready_s:.2f} s at {peer.url}", flush=True)
                peers[name] = peer
                warm_up(peer.url, images, paths[name])
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"peer {name} skipped: {exc}", flush=True)
                if name in peers:
                    peers.pop(name).stop()
    except BaseException:  # interrupted: stop those already started
        for srv in peers.values():
            srv.stop()
        raise
    return peers
