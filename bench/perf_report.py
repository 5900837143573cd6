"""The results of ``bench.perf``: tallies, ratios, the targets with PASS/FAIL, and the markdown it prints.

* :class:`Tally`: one contender's latencies and counts on one configuration, summed over the rounds;
* :func:`report_rows`: one row per (endpoint, image, concurrency) with every contender's summary and the ratios;
* :func:`twelve_mp_rules`: L / (S + D) of the 12 MP rule (``--peers``); :func:`draft_check`: JPEG draft off vs on;
* :func:`settings_notes`: the settings a run records;
* :func:`check_targets`: every target with its measured value and PASS/FAIL;
* :func:`markdown_table`, :func:`peers_table`, :func:`print_report`: what goes to stdout;
* :func:`machine_notes`: CPU count, load and the busy processes, recorded before and after a run.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import LoadResult
from bench.peers.drive import PEERS

# every contender, in the order each round runs them
CONTENDERS = ("http", "http_int8", "http_raw", "inproc", "bento", "fastapi", "bento_default", "bento_tuned")


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
        limit = r.get("inproc_over_fastapi")
        ceiling = f" (the in-process limit: {limit:.2f} x)" if limit is not None else ""
        if "fastapi" in r["results"]:
            target(
                f"{where}: http / minimal FastAPI throughput{ceiling}",
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
    target("ready after start (median of starts)", report["service"]["ready_s_median"], 2.0, False, "s")
    return out


def report_rows(tallies: dict[tuple[str, str, int], dict[str, Tally]]) -> list[dict[str, Any]]:
    """One row per (endpoint, image, concurrency): each contender's summary and the throughput ratios."""
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
        # The most any server running our pipeline could reach over each other contender: the in-process limit's
        # throughput over theirs.
        for other in (o for o in (*PEERS, "bento") if o in summ and "inproc" in summ):
            row[f"inproc_over_{other}"] = ratio(summ["inproc"]["throughput_rps"], summ[other]["throughput_rps"])
        if "bento" in summ:
            row["http_over_bento"] = ratio(summ["http"]["throughput_rps"], summ["bento"]["throughput_rps"])
            if "http_raw" in summ:
                row["http_raw_over_bento"] = ratio(summ["http_raw"]["throughput_rps"], summ["bento"]["throughput_rps"])
        rows.append(row)
    return rows


def twelve_mp_rules(
    rows: list[dict[str, Any]],
    draft_ms: dict[tuple[str, str], list[float]],
    images: dict[tuple[str, str], Path],
    low: int,
) -> list[dict[str, Any]]:
    """The 12 MP rule for each 12 MP image with D measured (``draft_ms``, one per round): S and L the http p50 at
    concurrency ``low`` for the 640x480 and the 12 MP photo, D the median of the rounds; L <= 1.15 (S + D)."""
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
    return rules


def draft_check(on: Tally, off: Tally, endpoint: str) -> dict[str, Any]:
    """JPEG draft on against off: ``endpoint`` in-process at c=1 on the 12 MP photo."""
    on_s, off_s = on.summary(), off.summary()
    return {
        "endpoint": endpoint,
        "concurrency": 1,
        "on": on_s,
        "off": off_s,
        "p50_off_over_on": ratio(off_s["p50_ms"], on_s["p50_ms"]),
    }


SETTINGS_NOTED = (
    "intra_op_threads",
    "inter_op_threads",
    "ort_spinning",
    "max_concurrency",
    "jpeg_draft",
    "cam_max_side",
)


def settings_notes(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings (``Settings.model_dump()``) that bear on speed, for the report."""
    return {k: settings[k] for k in SETTINGS_NOTED} | {
        k: v for k, v in settings.items() if k in ("blas_threads", "ort_arena")
    }


def print_report(report: dict[str, Any]) -> None:
    """The report as markdown on stdout: the table, the peers' table, the 12 MP rule, the targets."""
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
