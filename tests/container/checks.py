"""The containers as a user runs them: the image built from the Dockerfile, `docker compose up` (podman-compose
here) and the `scale` profile behind its load balancer.

Run by tests/container/run.sh (`make test-container`), which installs podman, builds the images first and
cleans up after; not collected by `make test` (the file name is not test_*.py). Every request goes to a host
port on 127.0.0.1 that compose publishes; the containers talk to each other on compose's own network.
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = os.environ.get("PODMAN_COMPOSE", str(ROOT / ".venv-compose" / "bin" / "podman-compose"))
PROJECT = os.environ.get("LOCSVC_CT_PROJECT", "locsvc-ct")
SCALE_OVERRIDE = ROOT / "deploy" / "container" / "compose.scale.yml"
ARTIFACTS = ROOT / "artifacts" / "container"
KEY = secrets.token_hex(24)
GRACE_S = 35  # stop_grace_period in docker-compose.yml
PACE_S = 0.05  # four paced clients: at most 80 requests/s, under the LB's 100 r/s per address
REPLICAS = 2
ENDPOINTS = ("/cam", "/localize", "/pose")
# Fields that differ between two runs of the same request by nature.
VOLATILE = {"timings"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(cmd: list[str], timeout: float = 120, check: bool = True, env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)}: no answer within {timeout} s") from e
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def podman(*args: str, timeout: float = 60, check: bool = True) -> str:
    return run(["podman", *args], timeout=timeout, check=check)


def inspect(name: str) -> dict[str, Any]:
    doc: list[dict[str, Any]] = json.loads(podman("inspect", name))
    return doc[0]


def logs(name: str) -> str:
    p = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30, check=False)
    return p.stdout + p.stderr


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out


@dataclass
class Compose:
    """podman-compose on docker-compose.yml as shipped (plus compose.scale.yml for the scale profile)."""

    scale: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 180) -> str:
        files = ["-f", "docker-compose.yml"] + (["-f", str(SCALE_OVERRIDE), "--profile", "scale"] if self.scale else [])
        cmd = [COMPOSE, "-p", PROJECT, "--in-pod", "false", *files, *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCSVC_")} | self.env
        old = os.getcwd()
        os.chdir(ROOT)
        try:
            return run(cmd, timeout=timeout, env=env)
        finally:
            os.chdir(old)

    def containers(self, service: str) -> list[str]:
        out = podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label=io.podman.compose.project={PROJECT}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip
        return sorted(out.split())

    def running(self) -> list[str]:
        out = podman("ps", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={PROJECT}")
        return sorted(out.split())

    def stop(self) -> None:
        """`compose stop`, then `podman stop` (same grace period) for what it left running: podman-compose 1.6
        only knows replica 1 of a service scaled with --scale (it reads deploy.replicas only with
        mode: replicated), so its stop and down leave the others running."""
        self("stop", timeout=GRACE_S * 3)
        if left := self.running():
            podman("stop", "-t", str(GRACE_S), *left, timeout=GRACE_S * 3)

    def down(self) -> None:
        self("down", timeout=GRACE_S * 3)
        left = podman("ps", "-aq", "--filter", f"label=io.podman.compose.project={PROJECT}").split()
        if left:
            podman("rm", "-f", "-t", str(GRACE_S), *left, timeout=GRACE_S * 3)
        podman("network", "rm", "-f", f"{PROJECT}_default", check=False)


def wait_ready(url: str, container: str, timeout_s: float = 90) -> float:
    """Seconds until ``url`` answers 200; fails early, with the logs, if the container stops."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.TransportError:
            pass
        state = inspect(container)["State"]
        if not state["Running"]:
            raise AssertionError(
                f"{container} stopped ({state['Status']}, exit {state['ExitCode']}):\n{logs(container)}"
            )
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout_s} s:\n{logs(container)[-3000:]}")


def wait_healthy(container: str, timeout_s: float = 60) -> None:
    """Runs the image's health check until it passes: podman schedules it with systemd timers, and this machine
    has no systemd, so nothing runs it periodically by itself."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            subprocess.run(["podman", "healthcheck", "run", container], capture_output=True, check=False).returncode
            == 0
        ):
            return
        time.sleep(1)
    raise AssertionError(f"{container} not healthy within {timeout_s} s:\n{logs(container)[-3000:]}")


def photos() -> dict[str, bytes]:
    """Real photos as JPEG (scikit-image ships them): a cat and a person."""
    skd = pytest.importorskip("skimage.data")
    out = {}
    for name in ("chelsea", "astronaut"):
        buf = io.BytesIO()
        Image.fromarray(getattr(skd, name)()).convert("RGB").save(buf, "JPEG", quality=90)
        out[name] = buf.getvalue()
    return out


def post(client: httpx.Client, path: str, jpeg: bytes, **headers: str) -> httpx.Response:
    return client.post(path, files={"image": ("photo.jpg", jpeg, "image/jpeg")}, headers=headers)


def assert_same(a: Any, b: Any, where: str = "$") -> None:
    """Equal JSON, floats up to 1e-4 relative (1e-6 absolute); VOLATILE keys ignored."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) - VOLATILE == set(b) - VOLATILE, f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in set(a) - VOLATILE:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), f"{where}: {a!r} != {b!r}"
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ---------------------------------------------------------------------------------------------- `compose up`


@dataclass
class Api:
    url: str
    name: str
    compose: Compose


@pytest.fixture(scope="class")
def api() -> Iterator[Api]:
    port = free_port()
    compose = Compose(env={"LOCSVC_API_KEY": KEY, "LOCSVC_PORT": str(port), "LOCSVC_BIND": "127.0.0.1"})
    try:
        compose("up", "-d", "--no-build", "api")
        (name,) = compose.containers("api")
        took = wait_ready(f"http://127.0.0.1:{port}/readyz", name)
        print(f"\n/readyz 200 {took:.1f} s after `up` returned", file=sys.stderr)
        yield Api(f"http://127.0.0.1:{port}", name, compose)
    finally:
        for n in compose.containers("api"):
            (ARTIFACTS / f"{n}.log").write_text(logs(n))
        compose.down()


@pytest.fixture(scope="module")
def local_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same app on the host (.venv, `uvicorn app.main:app`), same key and inference settings as compose."""
    port = free_port()
    log = tmp_path_factory.mktemp("local") / "uvicorn.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCSVC_")}
    env |= {
        "LOCSVC_API_KEY": KEY,
        "LOCSVC_MAX_CONCURRENCY": "4",
        "LOCSVC_MAX_QUEUE": "8",
        "LOCSVC_INTRA_OP_THREADS": "1",
    }
    uvicorn = ROOT / ".venv" / "bin" / "uvicorn"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(uvicorn), "app.main:app", "--host", "127.0.0.1", "--port", str(port), "--limit-concurrency", "32"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"local uvicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"local uvicorn not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class TestComposeUp:
    """`docker compose up`: the `api` service."""

    def test_readyz_and_key_required(self, api: Api) -> None:
        with httpx.Client(base_url=api.url, timeout=30) as c:
            r = c.get("/readyz")
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
            assert c.get("/healthz").status_code == 200
            jpeg = photos()["chelsea"]
            assert post(c, "/cam", jpeg).status_code == 401  # no key
            assert post(c, "/cam", jpeg, **{"X-API-Key": "not-the-key"}).status_code == 401

    def test_each_endpoint_answers_as_the_local_service(self, api: Api, local_service: str) -> None:
        with (
            httpx.Client(base_url=api.url, timeout=60) as box,
            httpx.Client(base_url=local_service, timeout=60) as here,
        ):
            for photo, jpeg in photos().items():
                for path in ENDPOINTS:
                    got, want = (
                        post(box, path, jpeg, **{"X-API-Key": KEY}),
                        post(here, path, jpeg, **{"X-API-Key": KEY}),
                    )
                    assert got.status_code == 200, f"{path} {photo}: {got.status_code} {got.text[:500]}"
                    assert want.status_code == 200, f"local {path} {photo}: {want.status_code} {want.text[:500]}"
                    assert_same(got.json(), want.json(), f"{path}({photo})")
            doc = post(box, "/cam", photos()["chelsea"], **{"X-API-Key": KEY}).json()
            assert doc["classes"][0]["name"] in {"Egyptian cat", "tabby", "tiger cat"}, doc["classes"][0]

    def test_healthcheck_is_healthy(self, api: Api) -> None:
        hc = inspect(api.name)["Config"]["Healthcheck"]
        assert "/readyz" in " ".join(hc["Test"]), hc
        p = subprocess.run(["podman", "healthcheck", "run", api.name], capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        assert inspect(api.name)["State"]["Health"]["Status"] == "healthy"

    def test_security_settings(self, api: Api) -> None:
        doc = inspect(api.name)
        host, conf = doc["HostConfig"], doc["Config"]
        assert conf["User"] == "10001"
        assert host["ReadonlyRootfs"] is True
        assert "/tmp" in host["Tmpfs"] and "size=256m" in host["Tmpfs"]["/tmp"]
        assert doc["EffectiveCaps"] in (None, []), doc["EffectiveCaps"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Memory"] == 1536 * 1024**2 and host["MemoryReservation"] == 768 * 1024**2
        assert host["NanoCpus"] == 2 * 10**9
        assert [b["HostIp"] for b in host["PortBindings"]["8000/tcp"]] == ["127.0.0.1"]
        # What the kernel applies to the running process (not only what podman recorded).
        pid = doc["State"]["Pid"]
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
        )
        assert status["Uid"].split() == ["10001"] * 4
        assert {status[k].strip() for k in ("CapPrm", "CapEff", "CapBnd")} == {"0000000000000000"}
        assert status["NoNewPrivs"].strip() == "1"
        cgroups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
        if "memory" in cgroups:  # cgroup v1 (this machine); v2: memory.max in the unified hierarchy
            assert Path(f"/sys/fs/cgroup/memory{cgroups['memory']}/memory.limit_in_bytes").read_text().strip() == str(
                1536 * 1024**2
            )
            cpu = Path(f"/sys/fs/cgroup/cpu{cgroups['cpu']}")
            quota, period = (int((cpu / f).read_text()) for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            assert quota == 2 * period
        else:
            base = Path(f"/sys/fs/cgroup{cgroups['']}")
            assert (base / "memory.max").read_text().strip() == str(1536 * 1024**2)
            quota_s, period_s = (base / "cpu.max").read_text().split()
            assert int(quota_s) == 2 * int(period_s)
        # Writable /tmp and OpenVINO's model cache (a named volume), read-only everywhere else.
        probe = (
            "touch /tmp/probe && rm /tmp/probe && echo tmp-ok; "
            "touch /var/cache/locsvc/probe && rm /var/cache/locsvc/probe && echo cache-ok; "
            "touch /srv/probe 2>/dev/null || echo srv-ro; touch /probe 2>/dev/null || echo root-ro"
        )
        assert podman("exec", api.name, "sh", "-c", probe).split() == ["tmp-ok", "cache-ok", "srv-ro", "root-ro"]
        assert "model cache is off" not in logs(api.name)

    def test_clean_stop_within_grace_period(self, api: Api) -> None:
        t0 = time.monotonic()
        api.compose("stop", "api", timeout=GRACE_S * 2)
        took = time.monotonic() - t0
        state = inspect(api.name)["State"]
        assert state["ExitCode"] == 0, (state, logs(api.name)[-2000:])
        assert took < GRACE_S, f"stop took {took:.1f} s (grace period {GRACE_S} s): killed, not stopped"
        assert "Application shutdown complete" in logs(api.name)
        print(f"\nclean stop in {took:.1f} s", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- `scale`


@dataclass
class Scaled:
    url: str
    lb: str
    replicas: dict[str, str]  # address -> container name
    compose: Compose


@pytest.fixture(scope="class")
def scaled() -> Iterator[Scaled]:
    port = free_port()
    compose = Compose(
        scale=True,
        env={"LOCSVC_API_KEY": KEY, "LOCSVC_LB_PORT": str(port), "LOCSVC_BIND": "127.0.0.1",
             "LB_EXPECT_REPLICAS": str(REPLICAS)},
    )  # fmt: skip
    try:
        compose("up", "-d", "--no-build", "--scale", f"api-replica={REPLICAS}", "api-replica", "lb")
        names = compose.containers("api-replica")
        assert len(names) == REPLICAS, names
        assert compose.containers("api") == [], "the scale command must not start `api`"
        # podman 4.3 ignores depends_on's service_healthy (podman-compose says so): wait here instead.
        for n in names:
            wait_healthy(n, 90)
        replicas = {}
        for n in names:
            (net,) = inspect(n)["NetworkSettings"]["Networks"].values()
            replicas[net["IPAddress"]] = n
        (lb,) = compose.containers("lb")
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/lb-healthz", lb, 30)
        wait_healthy(lb, 30)
        yield Scaled(url, lb, replicas, compose)
    finally:
        for n in compose.containers("api-replica") + compose.containers("lb"):
            (ARTIFACTS / f"{n}.log").write_text(logs(n))
        compose.down()


def nginx_entries(lb: str) -> list[dict[str, Any]]:
    return [e for e in json_lines(logs(lb)) if "upstream_addr" in e]


def served_ids(container: str) -> list[str]:
    return [str(e["request_id"]) for e in json_lines(logs(container)) if e.get("logger") == "app.access"]


@dataclass
class Outcome:
    rid: str
    start: float
    end: float
    status: int | None
    error: str | None = None


class TestScale:
    """The `scale` profile: two replicas behind the load balancer."""

    def test_scale_serves_through_the_load_balancer(self, scaled: Scaled) -> None:
        jpeg = photos()["chelsea"]
        with httpx.Client(base_url=scaled.url, timeout=60) as c:
            assert c.get("/readyz").status_code == 200
            for i in range(2 * REPLICAS):
                r = post(c, "/cam", jpeg, **{"X-API-Key": KEY, "X-Request-ID": f"rr-{i}"})
                assert r.status_code == 200, r.text
                assert r.headers["X-Request-ID"] == f"rr-{i}"
            assert post(c, "/cam", jpeg).status_code == 401  # the key is still the replica's business
        time.sleep(0.5)
        seen = {e["upstream_addr"] for e in nginx_entries(scaled.lb) if e["request_id"].startswith("rr-")}
        assert seen == {f"{a}:8000" for a in scaled.replicas}, seen  # round robin over both replicas

    def test_replica_killed_under_load_loses_no_retryable_request(self, scaled: Scaled) -> None:
        """One replica's process is SIGKILLed under load. Only requests that had reached it may fail (a POST that
        reached a replica is never replayed); those that could not reach it are passed to the other one."""
        jpeg = photos()["chelsea"]
        victim_addr, victim = sorted(scaled.replicas.items())[0]
        outcomes: list[Outcome] = []
        lock = threading.Lock()
        stop_at = [time.monotonic() + 60.0]

        def client(worker: int) -> None:
            # Each worker starts its requests at least PACE_S apart: the four stay under nginx's per-address rate (100 r/s), so a
            # failure here is the kill's, never the rate limiter's 429 (a fast replica pair serves more than that).
            with httpx.Client(base_url=scaled.url, timeout=60) as c:
                t = time.monotonic() - PACE_S
                for i in range(10_000):
                    time.sleep(max(0.0, t + PACE_S - time.monotonic()))
                    t = time.monotonic()
                    if t > stop_at[0]:
                        return
                    rid = f"kill-{worker}-{i}"
                    try:
                        status: int | None = post(
                            c, "/cam", jpeg, **{"X-API-Key": KEY, "X-Request-ID": rid}
                        ).status_code
                        error = None
                    except httpx.HTTPError as e:
                        status, error = None, repr(e)
                    with lock:
                        outcomes.append(Outcome(rid, t, time.monotonic(), status, error))

        workers = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(4)
        pid = inspect(victim)["State"]["Pid"]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(8)
        stop_at[0] = time.monotonic()
        for w in workers:
            w.join(90)
        assert not any(w.is_alive() for w in workers)
        time.sleep(1)  # nginx writes its line after the answer

        entries = {e["request_id"]: e for e in nginx_entries(scaled.lb) if e["request_id"].startswith("kill-")}
        victim_up = f"{victim_addr}:8000"
        before = [o for o in outcomes if o.start < killed_at]
        after = [o for o in outcomes if o.start >= killed_at]
        assert len(before) >= 8 and len(after) >= 8, (len(before), len(after))
        summary = f"{len(outcomes)} requests, {len(after)} started after the kill"
        failed = [o for o in outcomes if o.status != 200]
        for o in failed:
            e = entries.get(o.rid)
            assert e is not None, f"{o} never reached nginx ({summary})"
            attempts = e["upstream_addr"].split(", ")
            sent = e["upstream_bytes_sent"].split(", ")
            # Allowed: it had been sent to the victim before the kill; the LB may not replay it.
            assert attempts == [victim_up] and sent[0] not in ("0", "-"), f"lost a request the LB could retry: {o} {e}"
            assert o.start < killed_at + 0.5, f"a request sent after the kill failed: {o} {e}"
        for e in entries.values():  # only requests that never reached a replica were tried twice
            sent = e["upstream_bytes_sent"].split(", ")
            assert len(sent) <= 2 and all(s == "0" for s in sent[:-1]), f"replayed: {e}"
        replayed = set(served_ids(victim)) & set(served_ids(next(n for n in scaled.replicas.values() if n != victim)))
        assert not {r for r in replayed if r.startswith("kill-")}, f"answered by both replicas: {sorted(replayed)}"
        late = [o for o in after if o.start > killed_at + 1.0]
        assert late and all(o.status == 200 for o in late), [o for o in late if o.status != 200]
        failovers = sum(len(e["upstream_addr"].split(", ")) > 1 for e in entries.values())
        state = inspect(victim)["State"]
        restarted = "restarted by its restart policy" if state["Running"] and state["Pid"] != pid else "not restarted"
        print(
            f"\nkill under load: {summary}; failed {len(failed)} (all in flight on the victim), tried twice {failovers}; victim {restarted}",
            file=sys.stderr,
        )

    def test_unreachable_replica_fails_over(self, scaled: Scaled) -> None:
        """A replica that is gone (stopped: its address answers nothing) is a connect failure: every request
        still gets its answer, from the other replica, after one attempt that sent nothing."""
        jpeg = photos()["chelsea"]
        victim_addr, victim = sorted(scaled.replicas.items())[0]
        # The test before killed this replica: once it is back, let nginx's fail_timeout (5 s) pass, so that the
        # load balancer tries it again and meets the stopped replica, not one it still skips.
        wait_healthy(victim, 90)
        time.sleep(5.5)
        podman("stop", "-t", str(GRACE_S), victim, timeout=GRACE_S * 2)
        with httpx.Client(base_url=scaled.url, timeout=30) as c:
            for i in range(8):
                r = post(c, "/cam", jpeg, **{"X-API-Key": KEY, "X-Request-ID": f"gone-{i}"})
                assert r.status_code == 200, r.text
        time.sleep(0.5)
        entries = [e for e in nginx_entries(scaled.lb) if e["request_id"].startswith("gone-")]
        assert len(entries) == 8
        retried = [e for e in entries if len(e["upstream_addr"].split(", ")) == 2]
        assert retried, f"no request was tried on the stopped replica first: {entries}"
        for e in retried:
            assert e["upstream_addr"].split(", ")[0] == f"{victim_addr}:8000", e
            assert e["upstream_bytes_sent"].split(", ")[0] in ("0", "-"), e
        print(f"\nstopped replica: {len(retried)} of 8 requests failed over after a connect failure", file=sys.stderr)

    def test_scale_clean_stop_within_grace_period(self, scaled: Scaled) -> None:
        t0 = time.monotonic()
        scaled.compose.stop()
        took = time.monotonic() - t0
        assert took < GRACE_S, f"stop took {took:.1f} s"
        for n in [scaled.lb, *scaled.replicas.values()]:
            state = inspect(n)["State"]
            assert not state["Running"] and state["ExitCode"] == 0, (n, state, logs(n)[-1500:])
