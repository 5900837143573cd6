"""Instance loss behind the shipped nginx config: a request that reached a replica is never replayed on
another; one that could not reach a replica is; a replica SIGKILLed under load costs only the requests it
had in flight.

No Docker: Debian's nginx (``make install-nginx``) runs in the foreground with deploy/nginx/nginx.conf
rendered for loopback ports (tests/deploy/local.py), in front of uvicorn processes. Who saw a request is read
from both sides: nginx's JSON access log (``upstream_addr``: one address per attempt) and each replica's own
access log (one JSON line per request it answered, with the request id nginx forwarded). Run with ``-s`` to
see the measured throughput.
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bench.loadgen import LoadResult, run_load
from tests.deploy.local import (
    LOOPBACK,
    access_log,
    backend_request_ids,
    free_port,
    nginx_binary,
    start_backend,
    start_nginx,
    stop,
    tail,
    wait_http_ok,
)

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (`make install-nginx`: Debian's nginx package)"
)

# INFO: the replicas' access lines, read back to see which replica answered which request id.
BACKEND_ENV = {
    "LOCSVC_MODELS": '["efficientnet_lite0_imagenet"]',
    "LOCSVC_INTRA_OP_THREADS": "1",
    "LOCSVC_LOG_LEVEL": "INFO",
}
CONCURRENCY = 4
BEFORE_KILL_S = 4.0
AFTER_KILL_S = 5.0
# After the victim is reaped (its sockets closed), nginx may still route a request or two onto a connection
# to it whose close it has not processed yet; requests that start later than this must all succeed.
AFTER_DEATH_GRACE_S = 0.25
# The load comes from one address (127.0.0.1); a fast machine would meet the shipped per-client rate limit
# (checked in test_nginx_conf.py), so the load test renders the config with a rate it cannot reach.
LOAD_TEST_CLIENT_RATE = "100000r/s"


def cat_jpeg() -> bytes:
    skd = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skd.chelsea()).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Pool:
    url: str
    tmp: Path
    ports: list[int]
    backends: dict[int, subprocess.Popen[bytes]]
    nginx: subprocess.Popen[bytes]
    logs: list[Path]

    def addr(self, port: int) -> str:
        return f"{LOOPBACK}:{port}"

    def served(self, port: int, including: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Request ids answered by the replica on ``port`` (its own access log); waits (bounded) for those in
        ``including``: the service writes its line after the response went out."""
        for _ in range(100):
            ids = backend_request_ids(self.tmp / f"backend-{port}.log")
            if including <= set(ids):
                break
            time.sleep(0.05)
        return ids

    def entries(self, since: int = 0, prefix: str = "/cam", expected: int | None = None) -> list[dict[str, Any]]:
        """nginx's access log lines for ``prefix``; waits (bounded) for ``expected`` of them: nginx writes a
        line after the response went out."""
        for _ in range(100):
            entries = [e for e in access_log(self.tmp / "access.log")[since:] if e["uri"].startswith(prefix)]
            if expected is None or len(entries) >= expected:
                break
            time.sleep(0.05)
        return entries

    def logged(self) -> int:
        return len(access_log(self.tmp / "access.log"))


@contextmanager
def pool(tmp_path: Path, live: int, dead: int = 0, client_rate: str | None = None) -> Iterator[Pool]:
    """nginx in front of ``live`` service processes, then ``dead`` ports with nothing listening."""
    live_ports = [free_port() for _ in range(live)]
    ports = live_ports + [free_port() for _ in range(dead)]
    lb_port = free_port()
    logs = [tmp_path / f"backend-{p}.log" for p in live_ports] + [tmp_path / "error.log", tmp_path / "nginx.out"]
    backends: dict[int, subprocess.Popen[bytes]] = {}
    nginx: subprocess.Popen[bytes] | None = None
    try:
        backends = {p: start_backend(tmp_path, p, BACKEND_ENV) for p in live_ports}
        nginx = start_nginx(tmp_path, lb_port, ports, client_rate)
        for p in live_ports:
            wait_http_ok(f"http://{LOOPBACK}:{p}/readyz", list(backends.values()), 60, logs)
        url = f"http://{LOOPBACK}:{lb_port}"
        wait_http_ok(f"{url}/lb-healthz", [nginx], 10, logs)
        yield Pool(url, tmp_path, ports, backends, nginx, logs)
    finally:
        stop(nginx)
        for b in backends.values():
            if b.poll() is None:
                b.send_signal(signal.SIGCONT)  # a stopped process does not act on SIGTERM
            stop(b)


def single_attempt(entry: dict[str, Any]) -> str | None:
    """The replica of a request nginx sent to one replica only, else None."""
    addrs = entry["upstream_addr"].split(", ")
    return addrs[0] if len(addrs) == 1 else None


def assert_retries_never_resent(entries: list[dict[str, Any]]) -> None:
    """Every attempt but the last of a request sent nothing upstream: only connect failures were retried."""
    for e in entries:
        attempts = e["upstream_bytes_sent"].split(", ")
        assert len(attempts) <= 2, e  # proxy_next_upstream_tries 2
        assert all(a == "0" for a in attempts[:-1]), f"a request that reached a replica was replayed: {e}"


async def idle(direct: httpx.AsyncClient) -> bool:
    """The replica (asked directly) has no request in inference or admitted."""
    text = (await direct.get("/metrics")).text
    gauges = re.findall(r"^locsvc_inference_(?:inflight|pending)_requests (\S+)$", text, flags=re.M)
    return len(gauges) == 2 and all(float(g) == 0 for g in gauges)


def post_cam(client: httpx.Client, image: bytes, request_id: str) -> httpx.Response:
    return client.post("/cam", files={"image": ("cat.jpg", image, "image/jpeg")}, headers={"X-Request-ID": request_id})


def test_request_on_a_replica_that_dies_is_not_replayed(tmp_path: Path) -> None:
    """The victim stalls (SIGSTOP) with requests sent to it, then dies (SIGKILL): those clients get a 502,
    and the other replica never sees their requests."""
    image = cat_jpeg()
    with pool(tmp_path, live=2) as p:
        victim_port, survivor_port = p.ports
        victim = p.backends[victim_port]
        with httpx.Client(base_url=p.url, timeout=10) as client:
            assert post_cam(client, image, "warm-up-1").status_code == 200
        since = p.logged()
        victim.send_signal(signal.SIGSTOP)

        async def stall_then_kill() -> tuple[dict[str, httpx.Response], set[str]]:
            async with httpx.AsyncClient(base_url=p.url, timeout=60) as client:
                ids = [f"stalled-{i}" for i in range(6)]  # round robin: about half go to the victim
                tasks = {
                    rid: asyncio.create_task(
                        client.post(
                            "/cam", files={"image": ("cat.jpg", image, "image/jpeg")}, headers={"X-Request-ID": rid}
                        )
                    )
                    for rid in ids
                }
                # The survivor answers its share; the victim's wait (it reads nothing while stopped). Settled:
                # the survivor has nothing in progress and no answer came for 0.5 s.
                async with httpx.AsyncClient(base_url=f"http://{p.addr(survivor_port)}", timeout=5) as direct:
                    done, quiet_since, deadline = 0, time.monotonic(), time.monotonic() + 30
                    while time.monotonic() - quiet_since < 0.5 or not await idle(direct):
                        assert time.monotonic() < deadline, "the survivor did not settle"
                        await asyncio.sleep(0.05)
                        now_done = sum(t.done() for t in tasks.values())
                        if now_done != done:
                            done, quiet_since = now_done, time.monotonic()
                stalled = {rid for rid, t in tasks.items() if not t.done()}
                victim.send_signal(signal.SIGKILL)
                await asyncio.gather(*tasks.values(), return_exceptions=True)
                return {rid: t.result() for rid, t in tasks.items()}, stalled

        responses, stalled = asyncio.run(stall_then_kill())
        assert victim.wait(5) == -signal.SIGKILL
        assert stalled, "no request went to the stopped replica"
        entries = {e["request_id"]: e for e in p.entries(since, expected=len(responses))}
        survivor_ids = set(p.served(survivor_port, including=set(responses) - stalled))
        for rid, r in responses.items():
            e = entries[rid]
            if rid in stalled:
                # The client gets nginx's 502 (problem+json, with its request id) ...
                assert r.status_code == 502, (rid, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["request_id"] == rid and r.headers["X-Request-ID"] == rid
                # ... from the one attempt, on the victim: not replayed on the survivor.
                assert single_attempt(e) == p.addr(victim_port) and e["upstream_status"] == "502", e
                assert int(e["upstream_bytes_sent"]) > 0, e  # it had reached the victim
                assert rid not in survivor_ids, f"{rid} was replayed on the survivor"
            else:
                assert r.status_code == 200, (rid, r.status_code, r.text)
                assert single_attempt(e) == p.addr(survivor_port), e
                assert rid in survivor_ids
        assert p.backends[survivor_port].poll() is None, tail(p.logs)
        print(
            f"\nstalled then killed: {len(stalled)} of {len(responses)} requests on the victim, 502 each, none replayed"
        )


def test_connect_failures_fail_over(tmp_path: Path) -> None:
    """A replica port with nothing listening: the requests that meet it go to the other, nothing lost."""
    image = cat_jpeg()
    with pool(tmp_path, live=1, dead=1) as p:
        live_port, dead_port = p.ports
        since = p.logged()
        ids = [f"connect-{i}" for i in range(12)]
        with httpx.Client(base_url=p.url, timeout=30) as client:
            statuses = [post_cam(client, image, rid).status_code for rid in ids]
        assert statuses == [200] * len(ids)
        entries = p.entries(since, expected=len(ids))
        assert [e["request_id"] for e in entries] == ids
        assert_retries_never_resent(entries)
        retried = [e for e in entries if single_attempt(e) is None]
        assert retried, "no request met the dead port"
        for e in retried:
            assert e["upstream_addr"] == f"{p.addr(dead_port)}, {p.addr(live_port)}", e
            assert e["upstream_status"] == "502, 200", e
        assert all(e["upstream_addr"].endswith(p.addr(live_port)) for e in entries)
        # Each request was computed once, by the live replica.
        served = Counter(rid for rid in p.served(live_port, including=set(ids)) if rid in ids)
        assert served == Counter(ids)
        print(f"\nconnect failures: {len(retried)} of {len(ids)} requests met the dead port and went to the other")


async def load_with_kill(
    p: Pool, image: bytes, victim: subprocess.Popen[bytes], victim_port: int
) -> tuple[LoadResult, float, float, float, float]:
    """Closed-loop load through nginx; SIGKILL ``victim`` BEFORE_KILL_S into it, at a moment it has a request
    in inference. Returns (result, t0, t_kill, t_dead, t_end)."""
    t0 = time.time()
    load = asyncio.create_task(run_load(p.url, "/cam", image, CONCURRENCY, BEFORE_KILL_S + AFTER_KILL_S))
    await asyncio.sleep(BEFORE_KILL_S)
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{victim_port}", timeout=2) as direct:
        for _ in range(100):
            metrics = (await direct.get("/metrics")).text
            m = re.search(r"^locsvc_inference_inflight_requests (\S+)$", metrics, flags=re.M)
            if m and float(m[1]) >= 1:
                break
    t_kill = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)  # reaped: its sockets are closed
    t_dead = time.time()
    result = await load
    return result, t0, t_kill, t_dead, time.time()


def rps(entries: list[dict[str, Any]], start: float, end: float) -> float:
    ok = sum(1 for e in entries if e["status"] == 200 and start <= e["time"] < end)
    return ok / (end - start)


def test_instance_loss_under_load_costs_only_its_requests_in_flight(tmp_path: Path) -> None:
    image = cat_jpeg()
    with pool(tmp_path, live=2, client_rate=LOAD_TEST_CLIENT_RATE) as p:
        url = p.url
        victim_port, survivor_port = p.ports
        victim, survivor = p.backends[victim_port], p.backends[survivor_port]
        wait_http_ok(f"{url}/readyz", [p.nginx], 10, p.logs)

        # X-Request-ID: the client's id goes through to the service and back; without one, nginx makes one.
        r = httpx.get(f"{url}/readyz", headers={"X-Request-ID": "failover-test-1"}, timeout=5)
        assert r.headers["X-Request-ID"] == "failover-test-1"
        r = httpx.get(f"{url}/readyz", timeout=5)
        assert len(r.headers["X-Request-ID"]) == 32
        since = p.logged()

        result, t0, t_kill, t_dead, t_end = asyncio.run(load_with_kill(p, image, victim, victim_port))
        assert victim.wait(5) == -signal.SIGKILL
        assert survivor.poll() is None, tail(p.logs)

        summary = result.summary()
        entries = p.entries(since, expected=summary["requests"])
        victim_addr, survivor_addr = p.addr(victim_port), p.addr(survivor_port)
        for e in entries:
            e["start"] = e["time"] - e["request_time"]
        failed = [e for e in entries if e["status"] != 200]
        retried = [e for e in entries if single_attempt(e) is None]
        before, after = rps(entries, t0, t_kill), rps(entries, t_dead, t_end)
        print(
            f"\nfailover: {summary['requests']} requests, statuses {summary['statuses']}, transport errors "
            f"{summary['transport_errors']}; failed (in flight on the killed instance): {len(failed)}; "
            f"connect failures sent on to the other instance: {len(retried)}"
            f"\nthroughput (cat 451x300 JPEG, /cam, concurrency {CONCURRENCY}): 2 instances {before:.2f} req/s "
            f"before the kill, 1 instance {after:.2f} req/s after; p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms"
        )

        # Every request got an HTTP answer (nginx's 502 for the lost ones), each logged once by nginx.
        assert result.transport_errors == 0, summary
        assert set(result.statuses) <= {200, 502}, summary
        assert len(entries) == summary["requests"], "nginx logged a different number of /cam requests"
        # The kill happened under load: the victim had answered its share until then.
        assert any(single_attempt(e) == victim_addr and e["status"] == 200 for e in entries)

        # Only the requests in flight on the victim at the kill failed: each client had at most one.
        assert len(failed) <= CONCURRENCY, [(e["request_id"], e["start"] - t_kill) for e in failed]
        answered_by_survivor = {
            e["request_id"] for e in entries if e["status"] == 200 and e["upstream_addr"].endswith(survivor_addr)
        }
        survivor_ids = Counter(p.served(survivor_port, including=answered_by_survivor))
        for e in failed:
            assert e["status"] == 502 and single_attempt(e) == victim_addr and e["upstream_status"] == "502", e
            assert e["start"] < t_dead + AFTER_DEATH_GRACE_S and e["time"] >= t_kill, (e, t_kill, t_dead)
            assert e["request_id"] not in survivor_ids, f"{e['request_id']} was replayed on the survivor"
        # Nothing was replayed after reaching a replica; connect failures went on to the survivor.
        assert_retries_never_resent(entries)
        assert all(e["upstream_addr"] == f"{victim_addr}, {survivor_addr}" for e in retried), retried
        # Everything that started after the kill was answered by the survivor, which computed it once.
        later = [e for e in entries if e["start"] >= t_dead + AFTER_DEATH_GRACE_S]
        assert later and all(e["status"] == 200 and e["upstream_addr"].endswith(survivor_addr) for e in later)
        assert all(survivor_ids[e["request_id"]] == 1 for e in later)
        assert before > 0 and after > 0
