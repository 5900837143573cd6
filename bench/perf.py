"""Performance harness: the service over HTTP, next to its in-process limit and to BentoML, in one run.

    python -m bench.perf                                  # every endpoint a loaded model serves, both images
    python -m bench.perf --duration 20 --rounds 4 --concurrency 1 4 --endpoints /cam --image small large
    python -m bench.perf --no-bento --env LOCSVC_INTRA_OP_THREADS=2 --env LOCSVC_MAX_CONCURRENCY=1

It starts the service itself (``uvicorn app.main:app`` on a free loopback port, ``LOCSVC_*`` from the
environment and ``--env``), finds the endpoints its models serve (``GET /models``) and, for each
endpoint, image (640x480 and 4000x3000 JPEGs made from a real photo) and concurrency, measures:

* ``http``: the service, driven by ``bench.loadgen`` (closed loop, keep-alive, the request bytes built
  once, so that the client takes little CPU from the 2 cores it shares);
* ``inproc``: the limit - the same service functions (decode, fit, onnxruntime, post-processing) in a
  worker process with the same environment and settings, the same concurrency over a thread pool and the
  same admission limit (``max_concurrency``), no HTTP (``bench.perf_inproc``);
* ``http_raw`` (with ``--raw-body``): the same server, the image sent as the raw body instead of a multipart field;
* ``bento``: the same models and the same service functions served by BentoML (``bench.bento_service``,
  from its own venv ``.venv-bento``: ``bench/requirements-bento.txt``), with the same processes and threads
  (BentoML ``workers`` = uvicorn workers, ``threads`` = ``LOCSVC_MAX_CONCURRENCY``), driven by the same client.

With ``--peers``, also what a user would run instead (``bench.peers``; ``/cam`` then asks every contender for the
top class only, ``?top_k=1``):

* ``fastapi``: the minimal FastAPI app around a naive pipeline (``bench.peers.fastapi_app``: sync routes, full
  Pillow decode, onnxruntime on one thread, CAM upsampled to the image);
* ``bento_default``: the same naive pipeline as a BentoML service with BentoML's defaults (``bench.peers.bento_naive``);
* ``bento_tuned``: the same with ``threads=--peer-bento-threads`` (4);
* ``http_int8`` (with ``--int8``): the service again, each request naming the int8 twin of the default model
  (``?model=<default>_int8``).

The 12 MP rule (``--peers``): for each 12 MP image, D = Pillow's draft decode of that file alone in this process
(median), S and L the service's p50 at the lowest concurrency for the 640x480 and the 12 MP photo; L <= 1.15 (S + D).

Contenders are interleaved: each run is cut into ``--rounds`` slices, and every slice runs every
contender back to back, so that the ratios hold on a shared, noisy machine.  It also measures JPEG draft
decoding off vs on (12 MP, in-process), the time from process start to ``/readyz`` 200, and the server's
resident memory after the load.  Results go to ``--out`` (JSON) and a markdown table to stdout; each
target is printed with its measured value and PASS/FAIL (the exit code stays 0 unless ``--strict``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.loadgen import LoadResult, run_load
from bench.server import LOOPBACK, ROOT, Server, cpu_s, environ_settings, free_port, server_env

IMAGES = {"small": (640, 480), "large": (4000, 3000), "phone": (4000, 3000)}
TWELVE_MP = ("large", "phone")
PEERS = ("fastapi", "bento_default", "bento_tuned")
# every contender, in the order each round runs them
CONTENDERS = ("http", "http_int8", "http_raw", "inproc", "bento", "fastapi", "bento_default", "bento_tuned")
ENDPOINT_PHOTO = {"/pose": "astronaut"}  # a person for /pose; the cat elsewhere


# --------------------------------------------------------------------------------------------- inputs


def photo_jpeg(width: int, height: int, photo: str = "chelsea", quality: int = 90) -> bytes:
    """A real photo (scikit-image's ``chelsea`` cat or ``astronaut``) resized with Pillow, as JPEG."""
    import skimage.data as skd

    img = Image.fromarray(getattr(skd, photo)()).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def phone_jpeg(width: int, height: int, photo: str = "chelsea", quality: int = 92, sigma: float = 8.0) -> bytes:
    """A 12 MP JPEG of a phone photo's size (3-5 MB): the real photo upscaled, with sensor-like noise (Gaussian,
    ``sigma`` levels, fixed seed) so that it carries a phone photo's entropy-coded data, at ``quality``."""
    import skimage.data as skd

    img = Image.fromarray(getattr(skd, photo)()).resize((width, height), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0.0, sigma, (height, width, 3)).astype(np.float32)
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bench_image(name: str, photo: str) -> bytes:
    return phone_jpeg(*IMAGES[name], photo=photo) if name == "phone" else photo_jpeg(*IMAGES[name], photo=photo)


def draft_decode_ms(data: bytes, size: tuple[int, int], n: int = 15) -> float:
    """Median ms of Pillow's draft decode of ``data`` alone, to at least ``size`` (w, h): open, ``draft`` (the
    smallest DCT scale that keeps ``size``), load."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", size)
            im.load()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def machine_notes() -> dict[str, Any]:
    """CPU count, load, and the processes other than this run's that used the CPU at the time."""
    others: list[str] = []
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
        mine = {os.getpid()}
        for line in out.splitlines()[1:]:
            pid, cpu, args = line.strip().split(None, 2)
            if int(pid) not in mine and float(cpu) >= 10 and "bench.perf" not in args and "ps -eo" not in args:
                others.append(f"{float(cpu):.0f}% {args[:80]}")
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "busy_processes": others[:8],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -------------------------------------------------------------------------------------------- servers


def start_service(env: dict[str, str], workers: int, log_path: Path, timeout_s: float = 120.0) -> Server:
    """``uvicorn app.main:app`` as ``make run`` starts it, on a free loopback port, with ``LOCSVC_*`` from
    ``env`` only; ``ready_s``: from process start to ``/readyz`` 200 (polled every 10 ms)."""
    return Server(log_path, env, workers=workers).wait_ready(timeout_s, poll_s=0.01)


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


class InprocWorker:
    """``python -m bench.perf_inproc`` with the service's environment, driven over stdin/stdout."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.perf_inproc"],
            cwd=ROOT,
            env=server_env(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        hello = self._read()
        self.load_s = float(hello["load_s"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process worker exited with {self.proc.wait()}; see {self.log.name}")
        out: dict[str, Any] = json.loads(line)
        return out

    def run(self, endpoint: str, image: Path, concurrency: int, duration_s: float) -> LoadResult:
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            (
                json.dumps(
                    {"endpoint": endpoint, "image": str(image), "concurrency": concurrency, "duration_s": duration_s}
                )
                + "\n"
            ).encode()
        )
        self.proc.stdin.flush()
        got = self._read()
        res = LoadResult(endpoint, concurrency, float(got["duration_s"]), list(got["latencies_ms"]))
        res.statuses.update({int(k): v for k, v in got["statuses"].items()})
        return res

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


# -------------------------------------------------------------------------------------------- results


@dataclass
class Tally:
    """Latencies and counts of one contender on one configuration, summed over the rounds."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    duration_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    round_rps: list[float] = field(default_factory=list)

    def add(self, r: LoadResult, client_cpu_s: float = 0.0, server_cpu_s: float = 0.0) -> None:
        self.round_rps.append(r.statuses.get(200, 0) / r.duration_s if r.duration_s else float("nan"))
        self.client_cpu_s += client_cpu_s
        self.server_cpu_s += server_cpu_s
        self.latencies_ms += r.latencies_ms
        self.statuses.update(r.statuses)
        self.transport_errors += r.transport_errors
        self.duration_s += r.duration_s

    def summary(self) -> dict[str, Any]:
        ok = self.statuses.get(200, 0)
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.full(1, np.nan)
        return {
            "throughput_rps": round(ok / self.duration_s, 3) if self.duration_s else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "requests": sum(self.statuses.values()) + self.transport_errors,
            "ok": ok,
            "errors": sum(v for k, v in self.statuses.items() if k != 200) + self.transport_errors,
            "duration_s": round(self.duration_s, 2),
            "client_cpu_ms_per_request": round(1000 * self.client_cpu_s / ok, 3) if ok else None,
            "server_cpu_ms_per_request": round(1000 * self.server_cpu_s / ok, 3) if ok and self.server_cpu_s else None,
            "round_rps": [round(v, 2) for v in self.round_rps],
        }


def round_ratios(a: dict[str, Any], b: dict[str, Any]) -> list[float | None]:
    """Throughput ratio a / b round by round: the two ran back to back in each round, so the spread of these
    is how far one run's ratio can be trusted on a noisy machine."""
    return [ratio(x, y) for x, y in zip(a["round_rps"], b["round_rps"], strict=True)]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and not (np.isnan(a) or np.isnan(b)) else None


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:.{digits}f}"
    return str(v)


def peers_table(rows: list[dict[str, Any]]) -> str:
    """``--peers``: one line per (endpoint, image, concurrency): req/s and p50 of each contender, and the ratios."""
    names = [n for n in CONTENDERS if n != "http_raw" and any(n in r["results"] for r in rows)]
    head = "| endpoint | image | conc. | " + " | ".join(f"{n} req/s, p50 ms" for n in names)
    head += " | http / fastapi | http_int8 / fastapi | http / bento_default |"
    lines = [head, "| --- | --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |"]
    for r in rows:
        cells = []
        for n in names:
            s = r["results"].get(n)
            cells.append(f"{fmt(s['throughput_rps'])}, {fmt(s['p50_ms'])}" if s else "-")
        lines.append(
            f"| {r['endpoint']} | {r['image']} | {r['concurrency']} | "
            + " | ".join(cells)
            + f" | {fmt(r.get('http_over_fastapi'), 2)} | {fmt(r.get('http_int8_over_fastapi'), 2)} | "
            f"{fmt(r.get('http_over_bento_default'), 2)} |"
        )
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (endpoint, image, concurrency, contender)."""
    head = (
        "| endpoint | image | conc. | server | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/req "
        "| http / inproc | http / bento |"
    )
    lines = [head, "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for name in CONTENDERS:
            s = r["results"].get(name)
            if s is None:
                continue
            over_inproc = fmt(r.get(f"{name}_over_inproc"), 2) if name.startswith("http") else ""
            over_bento = fmt(r.get(f"{name}_over_bento"), 2) if name.startswith("http") else ""
            lines.append(
                f"| {r['endpoint']} | {r['image']} | {r['concurrency']} | {name} | {fmt(s['throughput_rps'])} | {fmt(s['p50_ms'])} | "
                f"{fmt(s['p95_ms'])} | {fmt(s['p99_ms'])} | {s['errors']} | {fmt(s.get('server_cpu_ms_per_request'), 2)} | "
                f"{over_inproc} | {over_bento} |"
            )
    return "\n".join(lines)


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value and PASS/FAIL."""
    out: list[dict[str, Any]] = []

    def target(
        name: str,
        value: float | None,
        limit: float,
        higher_is_better: bool,
        unit: str = "",
        rounds: list[Any] | None = None,
    ) -> None:
        ok = value is not None and (value >= limit if higher_is_better else value <= limit)
        out.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "op": ">=" if higher_is_better else "<=",
                "unit": unit,
                "pass": ok,
            }
            | ({"rounds": rounds} if rounds else {})
        )

    rows = report["rows"]
    top = max(report["concurrency"])
    for r in (r for r in rows if r["concurrency"] == top and "inproc" in r["results"]):
        target(
            f"{r['endpoint']} {r['image']} c={top}: http / in-process throughput",
            r.get("http_over_inproc"),
            0.9,
            True,
            "x",
            r.get("http_over_inproc_rounds"),
        )
    for r in (r for r in rows if r["concurrency"] == top and "bento" in r["results"]):
        target(
            f"{r['endpoint']} {r['image']} c={top}: http / BentoML throughput", r.get("http_over_bento"), 1.5, True, "x"
        )
    low = min(report["concurrency"])
    for ep in report["endpoints"]:
        by_img = {r["image"]: r for r in rows if r["endpoint"] == ep and r["concurrency"] == low}
        if {"small", "large"} <= by_img.keys():
            cost = ratio(by_img["large"]["results"]["http"]["p50_ms"], by_img["small"]["results"]["http"]["p50_ms"])
            target(f"{ep} 12 MP / 640x480 cost (http p50 at c={low})", cost, 2.0, False, "x")
    low_rows = [r for r in rows if r["concurrency"] == low]
    for r in (r for r in rows if r["concurrency"] == top):
        where = f"{r['endpoint']} {r['image']} c={top}"
        if "fastapi" in r["results"]:
            target(
                f"{where}: http / minimal FastAPI throughput",
                r.get("http_over_fastapi"),
                1.3,
                True,
                "x",
                r.get("http_over_fastapi_rounds"),
            )
        if "fastapi" in r["results"] and "http_int8" in r["results"]:
            target(
                f"{where}: http int8 / minimal FastAPI throughput",
                r.get("http_int8_over_fastapi"),
                1.8,
                True,
                "x",
                r.get("http_int8_over_fastapi_rounds"),
            )
        if "bento_default" in r["results"]:
            target(
                f"{where}: http / BentoML default throughput",
                r.get("http_over_bento_default"),
                1.5,
                True,
                "x",
                r.get("http_over_bento_default_rounds"),
            )
    for r in (r for r in low_rows if "fastapi" in r["results"]):
        target(
            f"{r['endpoint']} {r['image']} c={low}: http p50 / minimal FastAPI p50",
            ratio(r["results"]["http"]["p50_ms"], r["results"]["fastapi"]["p50_ms"]),
            1.0,
            False,
            "x",
        )
    for rule in report.get("twelve_mp_rule", []):
        target(
            f"{rule['endpoint']} {rule['image']}: L / (S + D) (http p50 at c={low}; S {rule['S_ms']}, L {rule['L_ms']}, "
            f"D {rule['D_ms']} ms)",
            rule["L_over_S_plus_D"],
            1.15,
            False,
            "x",
        )
    target("resident memory after load (VmRSS)", report["service"]["rss_mb_after_load"], 400.0, False, "MB")
    target("ready after start (median of starts)", report["service"]["ready_s_median"], 3.0, False, "s")
    return out


# ------------------------------------------------------------------------------------------------ run


def http_run(
    url: str, endpoint: str, image: bytes, concurrency: int, duration_s: float, raw: bool = False
) -> tuple[LoadResult, float]:
    """One closed-loop HTTP run, and the CPU seconds this (client) process spent on it.  The image goes in
    the multipart field ``image``, or as the raw body when ``raw``."""
    field = None if raw else "image"
    cpu0 = time.process_time()
    try:
        import uvloop
    except ImportError:
        res = asyncio.run(run_load(url, endpoint, image, concurrency, duration_s, field_name=field))
    else:
        res = uvloop.run(run_load(url, endpoint, image, concurrency, duration_s, field_name=field))
    return res, time.process_time() - cpu0


def warm_up(
    url: str,
    endpoints: list[str],
    images: dict[tuple[str, str], Path],
    n: int = 3,
    target: Any = None,
) -> None:
    """``n`` requests per endpoint and image; ``target(endpoint)`` gives the path with its query (default: as is)."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for ep in endpoints:
            for (e, _), path in images.items():
                if e == ep:
                    for _ in range(n):
                        r = client.post(
                            target(ep) if target else ep,
                            files={"image": ("image.jpg", path.read_bytes(), "image/jpeg")},
                        )
                        r.raise_for_status()


def request_target(endpoint: str, cam_top_k: int | None, model: str | None = None) -> str:
    """The path a contender posts to: ``/cam?top_k=N`` when ``cam_top_k`` is set, ``model=`` when given."""
    query = {}
    if endpoint == "/cam" and cam_top_k is not None:
        query["top_k"] = str(cam_top_k)
    if model:
        query["model"] = model
    return endpoint + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def measure_ready(env: dict[str, str], workers: int, starts: int, log_dir: Path) -> list[float]:
    """Extra cold starts (process start -> /readyz 200), each stopped at once."""
    times = []
    for i in range(starts):
        p = start_service(env, workers, log_dir / f"perf-ready-{i}.log")
        times.append(round(p.ready_s, 3))
        p.stop()
    return times


def parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {pair!r}")
        env[k] = v
    return env


def bento_budget(args: argparse.Namespace, max_concurrency: int) -> tuple[int, int]:
    """BentoML (workers, threads): by default the service's processes and requests in inference at once."""
    return args.bento_workers or args.workers, args.bento_threads or max_concurrency


def run(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environ_settings() | parse_env(args.env)  # every server and worker gets these LOCSVC_*, and no others
    # Settings as the service will read them (same environment), for the CPU budget given to BentoML.
    os.environ.update(env)
    from app.config import Settings

    settings = Settings()
    notes_before = machine_notes()
    print(
        f"machine: {notes_before['cpus']} CPUs, load {notes_before['loadavg']}, busy: {notes_before['busy_processes']}",
        flush=True,
    )

    service = start_service(env, args.workers, out_dir / "perf-service.log")
    print(f"service ready in {service.ready_s:.2f} s at {service.url}", flush=True)
    inproc: InprocWorker | None = None
    bento: Server | None = None
    peers: dict[str, Server] = {}
    draft_ms: dict[tuple[str, str], list[float]] = {}
    try:
        models = httpx.get(f"{service.url}/models", timeout=10).json()
        served = sorted({e if e.startswith("/") else f"/{e}" for m in models for e in m["serves"]})
        endpoints = [e for e in (args.endpoints or served) if e in served]
        skipped = sorted(set(args.endpoints or []) - set(endpoints))
        if skipped:
            print(f"no loaded model serves {skipped}: skipped", flush=True)
        images: dict[tuple[str, str], Path] = {}
        for ep in endpoints:
            for name in args.image:
                path = out_dir / f"perf-{ENDPOINT_PHOTO.get(ep, 'chelsea')}-{name}.jpg"
                if not path.exists():
                    path.write_bytes(bench_image(name, ENDPOINT_PHOTO.get(ep, "chelsea")))
                images[(ep, name)] = path

        # What each contender posts to: /cam?top_k=1 with the peers; the int8 twin of the default model for http_int8.
        targets: dict[str, dict[str, str]] = {"http": {ep: request_target(ep, args.cam_top_k) for ep in endpoints}}
        model_of: dict[str, str] = {}  # endpoint -> the service's default model (the name its answer gives)
        with httpx.Client(base_url=service.url, timeout=60.0) as client:
            for ep in endpoints:
                data = next(p for (e, _), p in images.items() if e == ep).read_bytes()
                r = client.post(targets["http"][ep], files={"image": ("image.jpg", data, "image/jpeg")})
                r.raise_for_status()
                model_of[ep] = r.json()["model"]
        if args.int8:
            names = {m["name"] for m in models}
            int8 = {
                ep: request_target(ep, args.cam_top_k, f"{name}_int8")
                for ep, name in model_of.items()
                if f"{name}_int8" in names
            }
            if int8:
                targets["http_int8"] = int8
            else:
                print("no int8 twin of the default models is loaded: http_int8 skipped", flush=True)
        for name in ("http_raw", "bento", *PEERS):
            targets[name] = targets["http"]

        inproc = InprocWorker(env, out_dir / "perf-inproc.log") if args.inproc else None
        draft_off = (
            InprocWorker(env | {"LOCSVC_JPEG_DRAFT": "false"}, out_dir / "perf-inproc-nodraft.log")
            if args.draft_check and args.inproc and "large" in args.image
            else None
        )
        for name in args.peers:
            try:
                peer = start_peer(name, args.bento_python, args.peer_bento_threads, out_dir / f"perf-{name}.log")
                print(f"{name} ready in {peer.ready_s:.2f} s at {peer.url}", flush=True)
                peers[name] = peer
                warm_up(peer.url, endpoints, images, target=targets[name].__getitem__)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"peer {name} skipped: {exc}", flush=True)
                if name in peers:
                    peers.pop(name).stop()
        if args.bento:
            workers, threads = bento_budget(args, settings.max_concurrency)
            try:
                bento = start_bento(args.bento_python, env, workers, threads, out_dir / "perf-bento.log")
                print(
                    f"bentoml ready in {bento.ready_s:.2f} s at {bento.url} (workers={workers}, threads={threads})",
                    flush=True,
                )
                warm_up(bento.url, endpoints, images, target=targets["bento"].__getitem__)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"BentoML peer skipped: {exc}", flush=True)
                if bento is not None:
                    bento.stop()
                bento = None
                args.bento = False
        warm_up(service.url, endpoints, images, target=targets["http"].__getitem__)
        if "http_int8" in targets:
            warm_up(service.url, list(targets["http_int8"]), images, target=targets["http_int8"].__getitem__)
        servers: dict[str, Server] = {"http": service, "http_int8": service} | ({"bento": bento} if bento else {})
        servers |= peers

        configs = [(ep, img, c) for ep in endpoints for img in args.image for c in args.concurrency]
        tallies: dict[tuple[str, str, int], dict[str, Tally]] = {cfg: {} for cfg in configs}
        draft: dict[str, Tally] = {"on": Tally(), "off": Tally()}
        slice_s = args.duration / args.rounds
        for rnd in range(args.rounds):
            for ep, img, c in configs:
                data = images[(ep, img)].read_bytes()
                t = tallies[(ep, img, c)]
                for name in CONTENDERS:
                    if name == "inproc":
                        if inproc is not None:
                            cpu0 = cpu_s(inproc.proc.pid)
                            res = inproc.run(ep, images[(ep, img)], c, slice_s)
                            t.setdefault("inproc", Tally()).add(res, 0.0, cpu_s(inproc.proc.pid) - cpu0)
                        continue
                    if name == "http_raw" and not args.raw_body:
                        continue
                    srv = servers.get("http" if name == "http_raw" else name)
                    path = targets.get(name, {}).get(ep)
                    if srv is None or path is None:
                        continue
                    cpu0 = srv.cpu_s()
                    res, client_cpu = http_run(srv.url, path, data, c, slice_s, raw=name == "http_raw")
                    t.setdefault(name, Tally()).add(res, client_cpu, srv.cpu_s() - cpu0)
                s = {k: v.summary()["throughput_rps"] for k, v in t.items()}
                print(
                    f"round {rnd + 1}/{args.rounds} {ep} {img} c={c}: "
                    + ", ".join(f"{k} {v:.1f} req/s" for k, v in s.items()),
                    flush=True,
                )
            if draft_off is not None and inproc is not None:
                ep = endpoints[0]
                draft["on"].add(inproc.run(ep, images[(ep, "large")], 1, slice_s))
                draft["off"].add(draft_off.run(ep, images[(ep, "large")], 1, slice_s))
            if args.peers:  # D of the 12 MP rule, once a round, with every server idle
                for (ep, img), path in images.items():
                    if img in TWELVE_MP:
                        spec = json.loads((settings.models_dir / f"{model_of[ep]}.json").read_text())["input"]
                        size = (int(spec["width"]), int(spec["height"]))
                        draft_ms.setdefault((ep, img), []).append(draft_decode_ms(path.read_bytes(), size))
        if draft_off is not None:
            draft_off.stop()
        rss_after = service.rss_mb()
        bento_rss = round(bento.rss_mb(), 1) if bento else None
        peer_rss = {name: round(srv.rss_mb(), 1) for name, srv in peers.items()}
    finally:
        if inproc:
            inproc.stop()
        if bento:
            bento.stop()
        for srv in peers.values():
            srv.stop()
        service.stop()
    ready_times = [round(service.ready_s, 3), *measure_ready(env, args.workers, args.ready_starts, out_dir)]

    rows: list[dict[str, Any]] = []
    for (ep, img, c), t in tallies.items():
        summ = {k: v.summary() for k, v in t.items()}
        row: dict[str, Any] = {"endpoint": ep, "image": img, "concurrency": c, "results": summ}
        if "inproc" in summ:
            row["http_over_inproc"] = ratio(summ["http"]["throughput_rps"], summ["inproc"]["throughput_rps"])
            row["http_over_inproc_rounds"] = round_ratios(summ["http"], summ["inproc"])
            if "http_raw" in summ:
                row["http_raw_over_inproc"] = ratio(
                    summ["http_raw"]["throughput_rps"], summ["inproc"]["throughput_rps"]
                )
        for ours in ("http", "http_int8"):
            for peer_name in PEERS:
                if ours in summ and peer_name in summ:
                    row[f"{ours}_over_{peer_name}"] = ratio(
                        summ[ours]["throughput_rps"], summ[peer_name]["throughput_rps"]
                    )
                    row[f"{ours}_over_{peer_name}_rounds"] = round_ratios(summ[ours], summ[peer_name])
        if "bento" in summ:
            row["http_over_bento"] = ratio(summ["http"]["throughput_rps"], summ["bento"]["throughput_rps"])
            if "http_raw" in summ:
                row["http_raw_over_bento"] = ratio(summ["http_raw"]["throughput_rps"], summ["bento"]["throughput_rps"])
            # The most any server could reach over BentoML here: the in-process limit's throughput over BentoML's.
            if "inproc" in summ:
                row["inproc_over_bento"] = ratio(summ["inproc"]["throughput_rps"], summ["bento"]["throughput_rps"])
        rows.append(row)
    report: dict[str, Any] = {
        "command": "python -m bench.perf " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine_before": notes_before,
        "machine_after": machine_notes(),
        "env": {k: "(set)" if "KEY" in k.upper() else v for k, v in env.items()},  # no API key in the JSON
        "settings": {
            k: settings.model_dump()[k]
            for k in (
                "intra_op_threads",
                "inter_op_threads",
                "ort_spinning",
                "max_concurrency",
                "jpeg_draft",
                "cam_max_side",
            )
        }
        | {k: v for k, v in settings.model_dump().items() if k in ("blas_threads", "ort_arena")},
        "workers": args.workers,
        "raw_body": args.raw_body,
        "bento": {
            "workers": bento_budget(args, settings.max_concurrency)[0],
            "threads": bento_budget(args, settings.max_concurrency)[1],
            "rss_mb_after_load": bento_rss,
        }
        if args.bento
        else None,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "endpoints": endpoints,
        "images": {f"{ep} {img}": {"size": IMAGES[img], "bytes": p.stat().st_size} for (ep, img), p in images.items()},
        "rows": rows,
        "cam_top_k": args.cam_top_k,
        "peers": {
            name: {"rss_mb_after_load": peer_rss.get(name)}
            | ({"threads": args.peer_bento_threads} if name == "bento_tuned" else {})
            for name in peers
        },
        "int8_targets": targets.get("http_int8"),
        "service": {
            "rss_mb_after_load": round(rss_after, 1),
            "ready_s": ready_times,
            "ready_s_median": round(statistics.median(ready_times), 3),
        },
    }
    low = min(args.concurrency)
    rules = []
    for (ep, img), ds in draft_ms.items():
        by_img = {r["image"]: r for r in rows if r["endpoint"] == ep and r["concurrency"] == low}
        if "small" in by_img and img in by_img:
            s_ms = by_img["small"]["results"]["http"]["p50_ms"]
            l_ms = by_img[img]["results"]["http"]["p50_ms"]
            d_ms = round(statistics.median(ds), 2)
            rules.append(
                {
                    "endpoint": ep,
                    "image": img,
                    "bytes": images[(ep, img)].stat().st_size,
                    "S_ms": s_ms,
                    "L_ms": l_ms,
                    "D_ms": d_ms,
                    "D_rounds_ms": ds,
                    "L_over_S_plus_D": ratio(l_ms, s_ms + d_ms),
                }
            )
    if rules:
        report["twelve_mp_rule"] = rules
    if draft["on"].duration_s:
        on, off = draft["on"].summary(), draft["off"].summary()
        report["jpeg_draft_12mp"] = {
            "endpoint": endpoints[0],
            "concurrency": 1,
            "on": on,
            "off": off,
            "p50_off_over_on": ratio(off["p50_ms"], on["p50_ms"]),
        }
    report["targets"] = check_targets(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    print()
    print(
        f"`{report['command']}` - {report['machine_before']['cpus']} CPUs, load {report['machine_before']['loadavg']} -> {report['machine_after']['loadavg']}"
    )
    print()
    print(markdown_table(report["rows"]))
    if report.get("peers"):
        print()
        print(f"/cam top_k={report.get('cam_top_k')} for every contender; req/s, p50 ms:")
        print()
        print(peers_table(report["rows"]))
        print()
        rss = {"service (http, http_int8)": report["service"]["rss_mb_after_load"]}
        if report.get("bento"):
            rss["bento (our pipeline)"] = report["bento"]["rss_mb_after_load"]
        rss |= {k: v["rss_mb_after_load"] for k, v in report["peers"].items()}
        print("resident memory after load: " + ", ".join(f"{k} {v} MB" for k, v in rss.items()))
    for rule in report.get("twelve_mp_rule", []):
        print(
            f"12 MP rule {rule['endpoint']} {rule['image']} ({rule['bytes'] / 1e6:.2f} MB): S {rule['S_ms']} ms, "
            f"L {rule['L_ms']} ms, D {rule['D_ms']} ms (rounds {rule['D_rounds_ms']}): "
            f"L / (S + D) = {rule['L_over_S_plus_D']}"
        )
    d = report.get("jpeg_draft_12mp")
    if d:
        print()
        print(
            f"JPEG draft, 12 MP, {d['endpoint']} in-process c=1: p50 on {d['on']['p50_ms']} ms, off {d['off']['p50_ms']} ms (off / on = {d['p50_off_over_on']})"
        )
    print()
    print(
        f"ready: {report['service']['ready_s']} s; resident memory after load: {report['service']['rss_mb_after_load']} MB"
    )
    print()
    ceilings = [r for r in report["rows"] if r.get("inproc_over_bento") is not None]
    if ceilings:
        print()
        print("ceiling on http / BentoML (in-process limit / BentoML throughput, same run):")
        for r in ceilings:
            print(f"  {r['endpoint']} {r['image']} c={r['concurrency']}: {fmt(r['inproc_over_bento'], 2)} x")
        print()
    for t in report["targets"]:
        spread = [v for v in t.get("rounds") or [] if v is not None]
        by_round = f"; round by round {min(spread):.2f}-{max(spread):.2f}" if len(spread) > 1 else ""
        print(
            f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {fmt(t['value'], 2)} {t['unit']} (target {t['op']} {t['limit']:g}{by_round})"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--endpoints",
        nargs="+",
        default=None,
        help="endpoints to measure, e.g. /cam /pose (default: every one a loaded model serves)",
    )
    ap.add_argument(
        "--image",
        nargs="+",
        choices=sorted(IMAGES),
        default=None,
        help="JPEGs: small 640x480, large 4000x3000 (0.8 MB, smooth), phone 4000x3000 (about 4 MB: noise added, "
        "quality 92). Default: small large; with --peers small phone",
    )
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 4], help="closed-loop clients (default: 1 4)")
    ap.add_argument(
        "--duration", type=float, default=12.0, help="seconds per contender and configuration, over all rounds"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved slices each duration is cut into")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn --workers (and BentoML workers)")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every server, e.g. LOCSVC_MAX_CONCURRENCY=2",
    )
    ap.add_argument(
        "--bento-threads",
        type=int,
        default=None,
        help="BentoML threads per worker (default: LOCSVC_MAX_CONCURRENCY, the same budget)",
    )
    ap.add_argument(
        "--bento-workers",
        type=int,
        default=None,
        help="BentoML worker processes (default: --workers; BentoML's advice for CPU work is one per core, "
        "e.g. --bento-workers 2 --bento-threads 1)",
    )
    ap.add_argument("--no-bento", dest="bento", action="store_false", help="skip the BentoML peer")
    ap.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=None,
        help="also what a user would run instead (bench.peers): the minimal FastAPI app, BentoML default and tuned "
        "around the same naive pipeline (no names: all three); sets /cam top_k=1 for every contender",
    )
    ap.add_argument("--peer-bento-threads", type=int, default=4, help="threads of the tuned BentoML peer (default: 4)")
    ap.add_argument(
        "--int8",
        action="store_true",
        help="also the service with each request naming the int8 twin of its default model (contender http_int8)",
    )
    ap.add_argument(
        "--cam-top-k",
        type=int,
        default=None,
        help="/cam?top_k= for every contender (default: 1 with --peers, else the service's default)",
    )
    ap.add_argument(
        "--no-inproc",
        dest="inproc",
        action="store_false",
        help="skip the in-process limit (it runs the service's default parameters: off with --cam-top-k)",
    )
    ap.add_argument(
        "--raw-body",
        action="store_true",
        help="also measure the service with the image as the raw request body (contender http_raw; the "
        "targets stay on the multipart upload, which BentoML's peer takes too)",
    )
    ap.add_argument(
        "--bento-python",
        type=Path,
        default=ROOT / ".venv-bento" / "bin" / "python",
        help="python of the venv where bentoml is installed",
    )
    ap.add_argument(
        "--no-draft-check",
        dest="draft_check",
        action="store_false",
        help="skip JPEG draft off vs on (12 MP, in-process)",
    )
    ap.add_argument("--ready-starts", type=int, default=2, help="extra cold starts timed for ready-after-start")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "artifacts" / "perf.json", help="JSON results (default: artifacts/perf.json)"
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(raw)
    args.argv = raw
    if args.peers is not None and not args.peers:
        args.peers = list(PEERS)
    args.peers = args.peers or []
    if args.image is None:
        args.image = ["small", "phone"] if args.peers else ["small", "large"]
    if args.cam_top_k is None and args.peers:
        args.cam_top_k = 1
    if args.cam_top_k is not None and args.inproc:
        print("--cam-top-k: the in-process limit runs the service's defaults, so it is skipped", flush=True)
        args.inproc = False
    bento_peers = [p for p in args.peers if p.startswith("bento")]
    if bento_peers and not args.bento_python.exists():
        print(f"{args.bento_python} not found: peers {bento_peers} skipped", flush=True)
        args.peers = [p for p in args.peers if p not in bento_peers]
    if args.bento and not args.bento_python.exists():
        print(
            f"{args.bento_python} not found: BentoML peer skipped (see docs/performance.md to install it)", flush=True
        )
        args.bento = False
    report = run(args)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"\nresults: {args.out}")
    if args.strict and not all(t["pass"] for t in report["targets"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
