"""The performance harness on the tiny seeded models: runners, report and targets (no timing assertions)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from app.config import Settings
from app.runtime import limit_blas_threads
from bench.loadgen import LoadResult, build_request, read_response, run_load
from bench.peers.drive import bento_budget
from bench.perf import main
from bench.perf_inproc import FifoGate, InProcess, run_inprocess
from bench.perf_report import Tally, check_targets, markdown_table, round_ratios
from bench.server import InprocWorker, Server, ServerError, cpu_s, environ_settings, free_port, rss_mb, server_env
from tests.conftest import encode, noise_image

ENDPOINTS = ("/cam", "/localize", "/pose")


@pytest.fixture(scope="module")
def runner(tiny_models_dir: Path) -> InProcess:
    return InProcess(Settings(models_dir=tiny_models_dir, intra_op_threads=1, max_concurrency=2))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_inprocess_runs_the_service_functions(runner: InProcess, endpoint: str) -> None:
    res = runner.run(endpoint, encode(noise_image(64, 48)), concurrency=3, duration_s=30, max_requests=7)
    assert res.statuses == {200: 7}
    assert len(res.latencies_ms) == 7
    assert res.summary()["ok"] == 7


def test_inprocess_counts_failures(runner: InProcess) -> None:
    res = runner.run("/cam", b"not an image", concurrency=2, duration_s=30, max_requests=4)
    assert res.statuses == {500: 4}
    assert res.latencies_ms == []


def test_fifo_gate_bounds_concurrency() -> None:
    gate = FifoGate(2)
    inside, peak = 0, 0
    lock = threading.Lock()

    def job(_: bytes, settings: Settings) -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0.002)
        with lock:
            inside -= 1

    settings = Settings(max_concurrency=2)
    res = run_inprocess(job, b"", concurrency=1, duration_s=30, settings=settings, max_requests=5)
    assert res.statuses == {200: 5}
    res = run_inprocess(job, b"", concurrency=6, duration_s=30, settings=settings, max_requests=40)
    assert res.statuses == {200: 40}
    assert peak <= 2
    with gate:
        pass


def test_inproc_worker_over_stdio(tiny_models_dir: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.jpg"
    img.write_bytes(encode(noise_image(80, 60)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCSVC_")}
    os_env = {"LOCSVC_MODELS_DIR": str(tiny_models_dir), "LOCSVC_INTRA_OP_THREADS": "1"}
    worker = InprocWorker(os_env, tmp_path / "w.log")
    try:
        res = worker.run("/pose", img, 2, 0.3)
    finally:
        worker.stop()
    assert env is not None
    assert res.statuses.get(200, 0) >= 1
    assert worker.load_s >= 0


def test_tally_sums_rounds() -> None:
    t = Tally()
    for i in range(2):
        r = LoadResult("/cam", 1, 2.0, [10.0 + i, 20.0 + i])
        r.statuses[200] += 2
        t.add(r)
    s = t.summary()
    assert s["ok"] == 4 and s["throughput_rps"] == 1.0 and s["errors"] == 0
    assert 10 <= s["p50_ms"] <= 21
    assert s["round_rps"] == [1.0, 1.0]


def test_round_by_round_ratios() -> None:
    """Each round's contenders ran back to back: their ratio per round shows how noisy the whole-run ratio is."""
    a, b = Tally(), Tally()
    for ok_a, ok_b in ((9, 10), (7, 10)):
        for t, ok in ((a, ok_a), (b, ok_b)):
            r = LoadResult("/cam", 4, 1.0)
            r.statuses[200] += ok
            t.add(r)
    assert round_ratios(a.summary(), b.summary()) == [0.9, 0.7]
    report = _report(30, 31, 15, 40, 60)
    for row in report["rows"]:
        row["http_over_inproc_rounds"] = [0.9, 1.0]
    t = next(t for t in check_targets(report) if t["target"] == "/cam small c=4: http / in-process throughput")
    assert t["rounds"] == [0.9, 1.0]


def _report(http: float, inproc: float, bento: float, small_ms: float, large_ms: float) -> dict[str, object]:
    def res(rps: float, p50: float) -> dict[str, object]:
        return {"throughput_rps": rps, "p50_ms": p50, "p95_ms": p50, "p99_ms": p50, "errors": 0}

    rows = []
    for img, ms in (("small", small_ms), ("large", large_ms)):
        for c in (1, 4):
            rows.append(
                {
                    "endpoint": "/cam",
                    "image": img,
                    "concurrency": c,
                    "results": {"http": res(http, ms), "inproc": res(inproc, ms), "bento": res(bento, ms)},
                    "http_over_inproc": round(http / inproc, 3),
                    "http_over_bento": round(http / bento, 3),
                }
            )
    return {
        "rows": rows,
        "concurrency": [1, 4],
        "endpoints": ["/cam"],
        "service": {"rss_mb_after_load": 250.0, "ready_s_median": 1.2},
    }


def test_targets_pass_and_fail() -> None:
    good = {t["target"]: t["pass"] for t in check_targets(_report(30, 31, 15, 40, 60))}
    assert all(good.values()) and len(good) == 7
    bad = {t["target"]: t["pass"] for t in check_targets(_report(20, 31, 15, 40, 100))}
    assert not bad["/cam small c=4: http / in-process throughput"]
    assert not bad["/cam small c=4: http / BentoML throughput"]
    assert not bad["/cam 12 MP / 640x480 cost (http p50 at c=1)"]
    assert bad["resident memory after load (VmRSS)"]


def test_markdown_table_has_a_line_per_contender() -> None:
    table = markdown_table(_report(30, 31, 15, 40, 60)["rows"])  # type: ignore[arg-type]
    lines = table.splitlines()
    assert len(lines) == 2 + 4 * 3
    assert lines[2].startswith("| /cam | small | 1 | http | 30.0 |")
    assert "0.97" in lines[2] and "2.00" in lines[2]


def test_cpu_seconds_of_this_process() -> None:
    before = cpu_s(os.getpid())
    sum(i * i for i in range(300_000))
    assert sys.platform != "linux" or cpu_s(os.getpid()) >= before
    assert cpu_s(2**22 + 12345) == 0.0  # no such process


def test_bento_budget_defaults_to_the_service_budget() -> None:
    args = argparse.Namespace(workers=1, bento_workers=None, bento_threads=None)
    assert bento_budget(args, max_concurrency=2) == (1, 2)
    args = argparse.Namespace(workers=1, bento_workers=2, bento_threads=1)
    assert bento_budget(args, max_concurrency=2) == (2, 1)


def test_rss_of_this_process() -> None:
    assert rss_mb(os.getpid()) > 10


def test_blas_threads_are_limited() -> None:
    assert sys.platform != "linux" or limit_blas_threads(1) >= 1


@pytest.mark.slow
def test_harness_end_to_end_on_tiny_models(
    tiny_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("skimage")
    out = tmp_path / "perf.json"
    monkeypatch.setenv("LOCSVC_MODELS_DIR", str(tiny_models_dir))
    main(
        [
            "--no-bento",
            "--raw-body",
            "--duration", "0.6",
            "--rounds", "2",
            "--concurrency", "1", "2",
            "--image", "small", "large",
            "--endpoints", "/cam", "/pose",
            "--ready-starts", "0",
            "--env", "LOCSVC_INTRA_OP_THREADS=1",
            "--out", str(out),
        ]
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["endpoints"] == ["/cam", "/pose"]
    assert len(report["rows"]) == 2 * 2 * 2
    assert all(r["results"]["http"]["ok"] > 0 and r["results"]["inproc"]["ok"] > 0 for r in report["rows"])
    # --raw-body: the same server, the image as the raw body
    assert all(r["results"]["http_raw"]["ok"] > 0 and r["http_raw_over_inproc"] > 0 for r in report["rows"])
    assert all(len(r["http_over_inproc_rounds"]) == 2 for r in report["rows"])  # one ratio per round
    assert "jpeg_draft_12mp" in report
    # the server's and the in-process worker's CPU per request are read from /proc (Linux)
    if sys.platform == "linux":
        assert all(r["results"]["http"]["server_cpu_ms_per_request"] is not None for r in report["rows"])
    assert {t["target"] for t in report["targets"]} >= {
        "resident memory after load (VmRSS)",
        "ready after start (median of starts)",
    }


@pytest.mark.parametrize(
    ("raw", "status", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", 200, True),
        (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 503, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, True),
    ],
)
def test_lean_client_reads_whole_responses(raw: bytes, status: int, keep: bool) -> None:
    async def read() -> tuple[int, bool, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw + b"NEXT")
        reader.feed_eof()
        got = await read_response(reader)
        return *got, await reader.read()

    assert asyncio.run(read()) == (status, keep, b"NEXT")


def test_lean_client_request_is_multipart() -> None:
    req = build_request("127.0.0.1:1", "/cam", b"\xff\xd8JPEG", {"top_k": 3})
    head, _, body = req.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /cam?top_k=3 HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'name="image"' in body and b"\xff\xd8JPEG" in body


def test_lean_client_request_raw_body() -> None:
    req = build_request("127.0.0.1:1", "/pose", b"\xff\xd8JPEG", None, field_name=None)
    head, _, body = req.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /pose HTTP/1.1\r\n") and b"Content-Type: image/jpeg" in head
    assert body == b"\xff\xd8JPEG" and b"Content-Length: 6" in head


@pytest.mark.parametrize("arena", ["shared", "session", "off"])
def test_arena_settings_serve(tiny_models_dir: Path, arena: str) -> None:
    """The onnxruntime arena modes the harness compares all load and run (the shared one is registered once)."""
    runner = InProcess(Settings(models_dir=tiny_models_dir, intra_op_threads=1, ort_arena=arena))  # type: ignore[arg-type]
    res = runner.run("/cam", encode(noise_image(64, 48)), concurrency=2, duration_s=30, max_requests=3)
    assert res.statuses == {200: 3}


@pytest.mark.anyio
async def test_asgi_floor_app_serves_the_same_job(tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench.asgi_floor's bare callable runs the service function and answers its JSON; 404 elsewhere."""
    import httpx

    from bench.asgi_floor import app_factory

    monkeypatch.setenv("LOCSVC_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("LOCSVC_INTRA_OP_THREADS", "1")
    app = app_factory()
    data = encode(noise_image(80, 60))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.post("/localize", content=data)
        assert r.status_code == 200
        body = r.json()
        assert body["image"]["width"] == 80 and "box" in body and body["label"]["name"]
        assert (await c.post("/nowhere", content=data)).status_code == 404


def test_lean_client_request_headers() -> None:
    req = build_request("127.0.0.1:1", "/cam", b"x", headers={"X-API-Key": "k"})
    head = req.partition(b"\r\n\r\n")[0]
    assert b"\r\nX-API-Key: k\r\n" in head


def test_lean_client_counts_a_silent_server_as_a_transport_error() -> None:
    """A connection that never answers costs ``timeout_s``, not the run."""

    async def go() -> LoadResult:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # never answers; ends when the client closes
            writer.close()

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            return await run_load(f"http://127.0.0.1:{port}", "/cam", b"x", 1, 30, max_requests=2, timeout_s=0.2)

    t0 = time.perf_counter()
    res = asyncio.run(go())
    assert res.transport_errors == 2 and not res.statuses
    assert time.perf_counter() - t0 < 5


def test_server_env_drops_the_callers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCSVC_MAX_QUEUE", "7")
    monkeypatch.setenv("LOCSVC_AUTH", "on")
    env = server_env({"LOCSVC_INTRA_OP_THREADS": "1"})
    assert env["LOCSVC_AUTH"] == "off" and env["LOCSVC_INTRA_OP_THREADS"] == "1"
    assert "LOCSVC_MAX_QUEUE" not in env
    assert server_env({"LOCSVC_AUTH": "on"})["LOCSVC_AUTH"] == "on"
    assert environ_settings()["LOCSVC_MAX_QUEUE"] == "7"  # for the harnesses that pass them on
    assert all(k.startswith("LOCSVC_") for k in environ_settings())


def test_server_that_exits_fails_with_its_log(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "print('no models here', flush=True); raise SystemExit(3)"]
    server = Server(tmp_path / "s.log", command=cmd, port=free_port(), name="broken")
    with pytest.raises(ServerError, match=r"(?s)broken exited with 3.*no models here"):
        server.wait_ready(timeout=30)
    assert server.stop() == 3
