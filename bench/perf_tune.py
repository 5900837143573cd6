"""Compare service settings in one run: in-process workers, one per configuration, interleaved in rounds.

    python -m bench.perf_tune --config "LOCSVC_INTRA_OP_THREADS=2 LOCSVC_MAX_CONCURRENCY=2" \\
        --config "LOCSVC_INTRA_OP_THREADS=1 LOCSVC_MAX_CONCURRENCY=2" --concurrency 1 4 --duration 12

Each configuration is a ``bench.perf_inproc`` worker process with those ``LOCSVC_*`` variables (decode,
fit, onnxruntime and post-processing through the app's service functions, the server's admission
limit); every round runs every configuration back to back, so that their ratios hold on a busy machine.
Prints a markdown table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from bench.perf_report import Tally, machine_notes
from bench.photos import ENDPOINT_PHOTO, IMAGES, photo_jpeg
from bench.server import ROOT, InprocWorker, environ_settings, parse_env, rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="space-separated KEY=VALUE list (one worker each)")
    ap.add_argument("--endpoint", default="/cam")
    ap.add_argument("--image", nargs="+", choices=sorted(IMAGES), default=["small"])
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--duration", type=float, default=12.0, help="seconds per configuration and case, over all rounds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "perf-tune.json")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    photo = ENDPOINT_PHOTO.get(args.endpoint, "chelsea")
    paths = {}
    for name in args.image:
        paths[name] = args.out.parent / f"perf-{photo}-{name}.jpg"
        if not paths[name].exists():
            paths[name].write_bytes(photo_jpeg(*IMAGES[name], photo=photo))
    notes = machine_notes()
    workers = [
        InprocWorker(environ_settings() | parse_env(shlex.split(c)), args.out.parent / f"perf-tune-{i}.log")
        for i, c in enumerate(args.config)
    ]
    cases = [(img, c) for img in args.image for c in args.concurrency]
    tallies: dict[tuple[int, str, int], Tally] = {}
    try:
        for _ in range(args.rounds):
            for img, c in cases:
                for i, w in enumerate(workers):
                    tallies.setdefault((i, img, c), Tally()).add(
                        w.run(args.endpoint, paths[img], c, args.duration / args.rounds)
                    )
        rss = [round(rss_mb(w.proc.pid), 1) for w in workers]
    finally:
        for w in workers:
            w.stop()
    rows: list[dict[str, Any]] = []
    print(f"{args.endpoint}, {notes['cpus']} CPUs, load {notes['loadavg']}, busy: {notes['busy_processes']}\n")
    print("| config | image | conc. | req/s | p50 ms | p95 ms | vs first | RSS MB (end) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for img, c in cases:
        base = tallies[(0, img, c)].summary()["throughput_rps"]
        for i, cfg in enumerate(args.config):
            s = tallies[(i, img, c)].summary()
            rows.append({"config": cfg, "image": img, "concurrency": c, **s, "rss_mb_end": rss[i]})
            rel = s["throughput_rps"] / base if base else float("nan")
            print(
                f"| {cfg} | {img} | {c} | {s['throughput_rps']:.1f} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {rel:.2f} | {rss[i]} |"
            )
    args.out.write_text(json.dumps({"endpoint": args.endpoint, "machine": notes, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
