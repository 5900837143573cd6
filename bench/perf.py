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

IMAGES = {"small": (640, 480), "large": (4000, 3000)}
ENDPOINT_PHOTO = {"/pose": "astronaut"}  # a person for /pose; the cat elsewhere


# --------------------------------------------------------------------------------------------- inputs


def photo_jpeg(width: int, height: int, photo: str = "chelsea", quality: int = 90) -> bytes:
    """A real photo (scikit-image's ``chelsea`` cat or ``astronaut``) resized with Pillow, as JPEG."""
    import skimage.data as skd

    img = Image.fromarray(getattr(skd, photo)()).resize((width, height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


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
    python: Path, env: dict[str, str], workers: int, threads: int, log_path: Path, timeout_s: float = 180.0
) -> Server:
    """``bentoml serve bench.bento_service:Svc`` from BentoML's own venv, telemetry off."""
    port = free_port()
    bento_env = env | {
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(ROOT / "artifacts" / "bentoml-home"),
        "PERF_BENTO_WORKERS": str(workers),
        "PERF_BENTO_THREADS": str(threads),
    }
    cmd = [str(python), "-m", "bentoml", "serve", "bench.bento_service:Svc", "--host", LOOPBACK, "--port", str(port)]
    return Server(log_path, bento_env, port=port, command=cmd, name="bentoml").wait_ready(timeout_s, poll_s=0.01)


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


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (endpoint, image, concurrency, contender)."""
    head = (
        "| endpoint | image | conc. | server | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU ms/req "
        "| http / inproc | http / bento |"
    )
    lines = [head, "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for name in ("http", "http_raw", "inproc", "bento"):
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
    for r in (r for r in rows if r["concurrency"] == top):
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


def warm_up(url: str, endpoints: list[str], images: dict[tuple[str, str], Path], n: int = 3) -> None:
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for ep in endpoints:
            for (e, _), path in images.items():
                if e == ep:
                    for _ in range(n):
                        r = client.post(ep, files={"image": ("image.jpg", path.read_bytes(), "image/jpeg")})
                        r.raise_for_status()


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
                    path.write_bytes(photo_jpeg(*IMAGES[name], photo=ENDPOINT_PHOTO.get(ep, "chelsea")))
                images[(ep, name)] = path

        inproc = InprocWorker(env, out_dir / "perf-inproc.log")
        draft_off = (
            InprocWorker(env | {"LOCSVC_JPEG_DRAFT": "false"}, out_dir / "perf-inproc-nodraft.log")
            if args.draft_check and "large" in args.image
            else None
        )
        if args.bento:
            workers, threads = bento_budget(args, settings.max_concurrency)
            try:
                bento = start_bento(args.bento_python, env, workers, threads, out_dir / "perf-bento.log")
                print(
                    f"bentoml ready in {bento.ready_s:.2f} s at {bento.url} (workers={workers}, threads={threads})",
                    flush=True,
                )
                warm_up(bento.url, endpoints, images)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"BentoML peer skipped: {exc}", flush=True)
                if bento is not None:
                    bento.stop()
                bento = None
                args.bento = False
        warm_up(service.url, endpoints, images)

        configs = [(ep, img, c) for ep in endpoints for img in args.image for c in args.concurrency]
        tallies: dict[tuple[str, str, int], dict[str, Tally]] = {cfg: {} for cfg in configs}
        draft: dict[str, Tally] = {"on": Tally(), "off": Tally()}
        slice_s = args.duration / args.rounds
        for rnd in range(args.rounds):
            for ep, img, c in configs:
                data = images[(ep, img)].read_bytes()
                t = tallies[(ep, img, c)]
                cpu0 = service.cpu_s()
                res, client_cpu = http_run(service.url, ep, data, c, slice_s)
                t.setdefault("http", Tally()).add(res, client_cpu, service.cpu_s() - cpu0)
                if args.raw_body:
                    cpu0 = service.cpu_s()
                    res, client_cpu = http_run(service.url, ep, data, c, slice_s, raw=True)
                    t.setdefault("http_raw", Tally()).add(res, client_cpu, service.cpu_s() - cpu0)
                cpu0 = cpu_s(inproc.proc.pid)
                res = inproc.run(ep, images[(ep, img)], c, slice_s)
                t.setdefault("inproc", Tally()).add(res, 0.0, cpu_s(inproc.proc.pid) - cpu0)
                if bento is not None:
                    cpu0 = bento.cpu_s()
                    res, client_cpu = http_run(bento.url, ep, data, c, slice_s)
                    t.setdefault("bento", Tally()).add(res, client_cpu, bento.cpu_s() - cpu0)
                s = {k: v.summary()["throughput_rps"] for k, v in t.items()}
                print(
                    f"round {rnd + 1}/{args.rounds} {ep} {img} c={c}: "
                    + ", ".join(f"{k} {v:.1f} req/s" for k, v in s.items()),
                    flush=True,
                )
            if draft_off is not None:
                ep = endpoints[0]
                draft["on"].add(inproc.run(ep, images[(ep, "large")], 1, slice_s))
                draft["off"].add(draft_off.run(ep, images[(ep, "large")], 1, slice_s))
        if draft_off is not None:
            draft_off.stop()
        rss_after = service.rss_mb()
        bento_rss = round(bento.rss_mb(), 1) if bento else None
    finally:
        if inproc:
            inproc.stop()
        if bento:
            bento.stop()
        service.stop()
    ready_times = [round(service.ready_s, 3), *measure_ready(env, args.workers, args.ready_starts, out_dir)]

    rows: list[dict[str, Any]] = []
    for (ep, img, c), t in tallies.items():
        summ = {k: v.summary() for k, v in t.items()}
        row: dict[str, Any] = {"endpoint": ep, "image": img, "concurrency": c, "results": summ}
        row["http_over_inproc"] = ratio(summ["http"]["throughput_rps"], summ["inproc"]["throughput_rps"])
        row["http_over_inproc_rounds"] = round_ratios(summ["http"], summ["inproc"])
        if "http_raw" in summ:
            row["http_raw_over_inproc"] = ratio(summ["http_raw"]["throughput_rps"], summ["inproc"]["throughput_rps"])
        if "bento" in summ:
            row["http_over_bento"] = ratio(summ["http"]["throughput_rps"], summ["bento"]["throughput_rps"])
            if "http_raw" in summ:
                row["http_raw_over_bento"] = ratio(summ["http_raw"]["throughput_rps"], summ["bento"]["throughput_rps"])
            # The most any server could reach over BentoML here: the in-process limit's throughput over BentoML's.
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
        "service": {
            "rss_mb_after_load": round(rss_after, 1),
            "ready_s": ready_times,
            "ready_s_median": round(statistics.median(ready_times), 3),
        },
    }
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
        default=["small", "large"],
        help="JPEGs: small 640x480, large 4000x3000",
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
