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
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.services.cam import CamParams
from bench.loadgen import http_run
from bench.peers.drive import PEERS, bento_budget, start_bento_service, start_peers, warm_up
from bench.perf_report import (
    CONTENDERS,
    Tally,
    check_targets,
    draft_check,
    machine_notes,
    print_report,
    report_rows,
    settings_notes,
    twelve_mp_rules,
)
from bench.photos import ENDPOINT_PHOTO, IMAGES, TWELVE_MP, bench_image, draft_decode_ms
from bench.server import ROOT, InprocWorker, Server, cpu_s, environ_settings, parse_env


def start_service(env: dict[str, str], workers: int, log_path: Path, timeout_s: float = 120.0) -> Server:
    """``uvicorn app.main:app`` as ``make run`` starts it, on a free loopback port, with ``LOCSVC_*`` from
    ``env`` only; ``ready_s``: from process start to ``/readyz`` 200 (polled every 10 ms)."""
    return Server(log_path, env, workers=workers).wait_ready(timeout_s, poll_s=0.01)


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
        peers = start_peers(args.peers, args.bento_python, args.peer_bento_threads, out_dir, images, targets)
        if args.bento:
            workers, threads = bento_budget(args, settings.max_concurrency)
            bento = start_bento_service(args.bento_python, env, workers, threads, out_dir, images, targets["bento"])
            args.bento = bento is not None
        warm_up(service.url, images, targets["http"])
        if "http_int8" in targets:
            warm_up(service.url, images, targets["http_int8"])
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

    rows = report_rows(tallies)
    report: dict[str, Any] = {
        "command": "python -m bench.perf " + " ".join(args.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine_before": notes_before,
        "machine_after": machine_notes(),
        "env": {k: "(set)" if "KEY" in k.upper() else v for k, v in env.items()},  # no API key in the JSON
        "settings": settings_notes(settings.model_dump()),
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
    rules = twelve_mp_rules(rows, draft_ms, images, min(args.concurrency))
    if rules:
        report["twelve_mp_rule"] = rules
    if draft["on"].duration_s:
        report["jpeg_draft_12mp"] = draft_check(draft["on"], draft["off"], endpoints[0])
    report["targets"] = check_targets(report)
    return report


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
    if args.cam_top_k not in (None, CamParams().top_k) and args.inproc:
        print("--cam-top-k: the in-process limit runs the service's default top_k, so it is skipped", flush=True)
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
