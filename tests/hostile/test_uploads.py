"""No single request may kill, bloat or stall a replica: the hostile corpus against a real uvicorn server.

One server (module-scoped) with every bundled model loaded, ``LOCSVC_AUTH=off``, one onnxruntime thread.
Every case of :mod:`tests.hostile.corpus` goes to every endpoint (/cam, /localize, /pose; as the raw body
or as multipart, alternating), and for each:

* the answer is 200 or a 4xx - the expected one where it is certain - never a 5xx, never a reset;
* it comes within 10 s (``LOCSVC_JOB_TIMEOUT_S``);
* the process is still alive, and a good JPEG still gets 200 afterwards;
* the server's peak resident memory during that request stays within its resident memory once ready (the
  bundled models: about 510 MB on OpenVINO, 330 MB on onnxruntime's CPU provider) plus the decode budget
  (``LOCSVC_MAX_DECODE_BYTES``, 200 MiB) and 64 MiB for the rest of a request (its body, arenas, the answer):
  the peak is reset before each upload (``echo 5 > /proc/<pid>/clear_refs``) and read after it (``VmHWM``).
  Where the kernel refuses the reset, the memory bound is skipped, saying so.

A killed server is restarted for the next case (the death fails the case that caused it).  ``-s`` prints the
results table; it is also written to ``hostile_uploads.json`` in pytest's base temporary directory.

Four 6000x6000 RGB PNGs sent at once (one per inference slot) peak within one decode budget, not four: the
jobs share it.

Then a second server with ``LOCSVC_MAX_CONCURRENCY=1``, ``LOCSVC_MAX_QUEUE=1`` checks what happens before
a body is read: (a) with the slot and the queue busy, ~7 MB uploads are refused with 503 + Retry-After before
their body is sent, and the server's memory does not grow with them; (b) an upload over the 8 MiB limit,
written whole before the client reads (urllib), gets a readable 413 problem, not a connection reset - with a
Content-Length, and chunked; (c) a client that stalls in the middle of its body does not hold the inference
slot, and stalled clients hold their admission place no longer than the queue timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import httpx
import pytest

from tests.hostile.corpus import BY_NAME, CASES, encode, gradient
from tests.hostile.replica import (
    MiB,
    RawResponse,
    Replica,
    connect,
    read_response,
    readable,
    request_head,
    send_headers_then_body,
)

pytestmark = pytest.mark.slow

ENDPOINTS = ("/cam", "/localize", "/pose")
MAX_SECONDS = 10.0  # LOCSVC_JOB_TIMEOUT_S
MAX_EXTRA_MB = 200.0 + 64.0  # MiB, as VmHWM / 1024: over the server's resident memory once ready (module docstring)
CLIENT_TIMEOUT_S = 60.0
GOOD_JPEG = encode(gradient(320, 240), "JPEG")


@dataclass
class Row:
    case: str
    endpoint: str
    how: str
    status: int | None
    seconds: float
    peak_mb: float | None
    expected: list[int]
    failures: list[str]


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    r = Replica(tmp_path_factory.mktemp("hostile-replica"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    path = tmp_path_factory.getbasetemp() / "hostile_uploads.json"
    path.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(f"\n{'case':34} {'endpoint':9} {'how':9} {'status':>6} {'seconds':>8} {'peak MB':>8}  failures")
    for r in rows:
        peak = f"{r.peak_mb:8.0f}" if r.peak_mb is not None else "       -"
        print(
            f"{r.case:34} {r.endpoint:9} {r.how:9} {r.status or '-':>6} {r.seconds:8.2f} {peak}  {'; '.join(r.failures)[:100]}"
        )
    print(f"({len(rows)} uploads, {sum(1 for r in rows if r.failures)} with failures; table in {path})")


def post(url: str, data: bytes, how: str, params: dict[str, str] | None = None) -> httpx.Response:
    if how == "raw":
        return httpx.post(
            url,
            content=data,
            params=params,
            headers={"Content-Type": "application/octet-stream"},
            timeout=CLIENT_TIMEOUT_S,
        )
    return httpx.post(
        url, files={"image": ("upload.bin", data, "application/octet-stream")}, params=params, timeout=CLIENT_TIMEOUT_S
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_hostile_upload(replica: Replica, table: list[Row], name: str, endpoint: str) -> None:
    case = BY_NAME[name]
    data = case.data
    server = replica.ensure()
    how = ("raw", "multipart")[(CASES.index(case) + ENDPOINTS.index(endpoint)) % 2]
    failures: list[str] = []
    measured = replica.reset_peak()
    start = time.perf_counter()
    status: int | None = None
    try:
        r = post(server.url + endpoint, data, how)
        status = r.status_code
        if status >= 400 and not r.headers.get("content-type", "").startswith("application/problem+json"):
            failures.append(f"{status} is not a problem+json answer")
        if "Traceback" in r.text:
            failures.append("a traceback in the answer")
    except httpx.HTTPError as exc:
        failures.append(f"no answer: {exc!r}")
    seconds = time.perf_counter() - start
    alive = replica.alive()
    peak = replica.peak_mb() if alive and measured else None
    if status is not None and status >= 500:
        failures.append(f"{status}: {r.text[:300]}")
    elif status is not None and status not in case.expect:
        failures.append(f"{status}, expected one of {sorted(case.expect)}: {r.text[:300]}")
    if seconds > MAX_SECONDS:
        failures.append(f"took {seconds:.1f} s (limit {MAX_SECONDS:g} s)")
    if not alive:
        failures.append(replica.death())
    if peak is not None and peak > (limit := replica.ready_mb + MAX_EXTRA_MB):
        failures.append(f"peak RSS {peak:.0f} MB (limit {limit:.0f} MB: {replica.ready_mb:.0f} once ready + 264)")
    if alive:
        try:
            after = post(server.url + endpoint, GOOD_JPEG, "multipart")
            if after.status_code != 200:
                failures.append(f"a good JPEG afterwards got {after.status_code}: {after.text[:200]}")
        except httpx.HTTPError as exc:
            failures.append(f"a good JPEG afterwards got no answer: {exc!r}")
    table.append(
        Row(
            name,
            endpoint,
            how,
            status,
            round(seconds, 3),
            None if peak is None else round(peak, 1),
            sorted(case.expect),
            failures,
        )
    )
    assert not failures, f"{name} ({case.why}) to {endpoint} as {how}:\n" + "\n".join(failures)
    if not replica.can_measure:
        pytest.skip("peak memory not checked: /proc/<pid>/clear_refs cannot be written here (VmHWM cannot be reset)")


AT_ONCE = 4  # LOCSVC_MAX_CONCURRENCY's default: one upload per inference slot


def test_heavy_uploads_at_once_share_one_decode_budget(replica: Replica) -> None:
    """Each job holds its decode's cost (an 8-bit RGB PNG of 6000x6000 is decoded whole: 150 MB of the 200 MiB
    budget) of the one shared budget until it ends, so four at once peak within the replica's memory once
    ready + one decode budget + 64 MiB per request: 230 MB over ready when measured after the whole module,
    against 586 MB with the budget taken out (four decodes at once) and 577 MB under glibc's moving mmap
    threshold (each worker thread's heap keeps the decode it freed; ``app.runtime.map_large_blocks``), both of
    which fail this bound. A request that does not get its share within the job deadline is refused with 503."""
    pngs = [encode(gradient(6000 + i, 6000), "PNG") for i in range(AT_ONCE)]
    server = replica.ensure()
    measured = replica.reset_peak()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        answers = list(pool.map(lambda png: post(server.url + "/cam", png, "multipart"), pngs))
    assert replica.alive(), replica.death()
    peak = replica.peak_mb() if measured else None
    statuses = [r.status_code for r in answers]
    for r in answers:
        assert r.status_code == 200 or (r.status_code == 503 and "decode memory" in r.text), r.text[:300]
    assert statuses.count(200) >= 2, statuses  # one after the other, within the 10 s deadline
    limit = replica.ready_mb + 200 + 64 * AT_ONCE
    assert peak is None or peak <= limit, f"peak RSS {peak:.0f} MB, limit {limit:.0f} MB ({statuses})"
    assert post(server.url + "/cam", GOOD_JPEG, "multipart").status_code == 200
    if peak is None:
        pytest.skip("peak memory not checked: /proc/<pid>/clear_refs cannot be written here (VmHWM cannot be reset)")


# ------------------------------------------------------------------------------ before the body is read


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """One inference slot, one queue place (two admission places in all)."""
    r = Replica(tmp_path_factory.mktemp("tight-replica"), LOCSVC_MAX_CONCURRENCY="1", LOCSVC_MAX_QUEUE="1")
    yield r
    r.stop()


def gauge(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    line = next((ln for ln in text.splitlines() if ln.startswith(name + " ")), None)
    return float(line.split()[1]) if line else -1.0


HEAVY_PARAMS = {"top_k": "20", "overlay": "true", "include_grid": "true"}


# Valid images, each slower to serve than the last (seconds of decoding): a heavy request must outlast the burst
# of uploads.  What they are answered (200, or 503 past the job deadline) does not matter here.
HOLDERS = ("png_grey16_7071", "bmp_rle4_runs", "bmp_rle8_eol")


class Holder(threading.Thread):
    """A heavy but valid request (a large image, 20 CAMs and an overlay), timed."""

    def __init__(self, url: str, case: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.case = case
        self.status: int | None = None
        self.done_at = float("inf")

    def finished(self) -> bool:
        return self.done_at < float("inf")

    def run(self) -> None:
        try:
            self.status = post(self.url + "/cam", BY_NAME[self.case].data, "raw", HEAVY_PARAMS).status_code
        finally:
            self.done_at = time.monotonic()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Burst:
    answers: list[RawResponse | OSError]
    peak_mb: float | None
    held: bool  # the slot and the queue stayed busy from before the first upload to after the last answer
    holders: tuple[int | None, int | None]


def burst(replica: Replica, body: bytes, holder: str, uploads: int = 30) -> Burst:
    """Fill the slot, then the queue, with heavy requests; then send ``uploads`` uploads at once."""
    url = replica.url
    first, second = Holder(url, holder), Holder(url, holder)
    first.start()
    wait_for(lambda: gauge(url, "locsvc_inference_inflight_requests") >= 1 or first.finished(), "the slot to be taken")
    second.start()
    wait_for(lambda: gauge(url, "locsvc_inference_pending_requests") >= 1 or second.finished(), "the queue to fill")
    measured = replica.reset_peak()
    start = time.monotonic()
    answers: list[RawResponse | OSError] = []
    with ThreadPoolExecutor(uploads) as pool:
        for f in [pool.submit(send_headers_then_body, url, "/cam", body, 3.0) for _ in range(uploads)]:
            try:
                answers.append(f.result())
            except OSError as exc:
                answers.append(exc)
    end = time.monotonic()
    peak = replica.peak_mb() if measured else None
    first.join(120)
    second.join(120)
    return Burst(answers, peak, first.done_at > end and second.done_at > start, (first.status, second.status))


def burst_problems(result: Burst, ready_mb: float) -> list[str]:
    problems = []
    for k, a in enumerate(result.answers):
        if isinstance(a, OSError):
            problems.append(f"upload {k}: no answer ({a!r})")
        elif a.status != 503 or "retry-after" not in a.headers:
            problems.append(f"upload {k}: {a.status} {a.headers} {a.body[:150]!r}")
        elif not a.before_body:
            problems.append(f"upload {k}: 503, but only once its body was sent (the body was read first)")
    if result.peak_mb is not None and result.peak_mb > (limit := ready_mb + MAX_EXTRA_MB):
        problems.append(f"peak RSS {result.peak_mb:.0f} MB during the uploads (limit {limit:.0f} MB)")
    return problems


def test_busy_replica_refuses_before_reading_bodies(tight: Replica) -> None:
    """(a) Slot and queue busy: 30 concurrent ~7 MB raw uploads are all refused with 503 + Retry-After, before
    their bodies are sent, and the server's memory does not grow with them."""
    tight.ensure()
    body = b"\x89PNG\r\n\x1a\n" + bytes(7 * MiB)
    for holder in HOLDERS:
        result = burst(tight, body, holder)
        problems = burst_problems(result, tight.ready_mb)
        print(
            f"\nheavy requests {holder}: held the slot and the queue throughout: {result.held}; "
            f"answers {result.holders}; peak {result.peak_mb} MB; {len(problems)} problems"
        )
        if not problems or result.held:
            break  # else an upload may have found the place a heavy request had just left: again, heavier
    assert tight.alive(), tight.death()
    assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} problems; heavy requests: {result.holders})"
    assert all(h is not None for h in result.holders), f"a heavy request got no answer: {result.holders}"


def urllib_post(url: str, data: bytes | Iterator[bytes], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """urllib writes the whole body before it reads a byte of the answer."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.mark.parametrize("size_mib", [9, 32])
def test_over_limit_upload_written_whole_reads_413(tight: Replica, size_mib: int) -> None:
    """(b) A body over the 8 MiB limit, with its Content-Length: the client that writes all of it before reading
    gets the 413 problem, not a reset (the server drains the body before closing)."""
    url = tight.ensure().url
    try:
        status, headers, body = urllib_post(
            url + "/cam", bytes(size_mib * MiB), {"Content-Type": "application/octet-stream"}
        )
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"{size_mib} MiB upload: the connection failed instead of a 413 ({exc!r})")
    assert status == 413, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/problem+json"), headers
    assert json.loads(body)["status"] == 413
    assert tight.alive(), tight.death()
    assert post(url + "/cam", GOOD_JPEG, "raw").status_code == 200


def test_over_limit_chunked_upload_reads_413(tight: Replica) -> None:
    """(b) No Content-Length (chunked) and more than 8 MiB: refused while streaming, and still readable."""
    url = tight.ensure().url

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield bytes(MiB)

    try:
        status, headers, body = urllib_post(
            url + "/cam", chunks(), {"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"}
        )
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"chunked 20 MiB upload: the connection failed instead of a 413 ({exc!r})")
    assert status == 413, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/problem+json"), headers
    assert tight.alive(), tight.death()


def test_content_length_and_chunked_together(tight: Replica) -> None:
    """(b) Content-Length says 1 kB and Transfer-Encoding says chunked, then 12 MiB follow (a request-smuggling
    shape): a 4xx if any answer comes (closing at once is allowed), and the replica unharmed."""
    url = tight.ensure().url
    with connect(url) as sock:
        sock.sendall(request_head("/cam", 1024, extra="Transfer-Encoding: chunked\r\n"))
        try:
            for _ in range(12):
                sock.sendall(b"100000\r\n" + bytes(MiB) + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # refused and closed while the body was on its way
        try:
            answer: RawResponse | None = read_response(sock, timeout=10)
        except (OSError, http.client.HTTPException):
            answer = None
    if answer is not None:
        assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert tight.alive(), tight.death()
    assert post(url + "/cam", GOOD_JPEG, "raw").status_code == 200


def stall(url: str, how: str) -> socket.socket:
    """Headers announcing a 1 MB body, 100 bytes of it, then nothing."""
    sock = connect(url)
    if how == "raw":
        sock.sendall(request_head("/cam", 1 << 20) + b"\xff\xd8\xff" + bytes(97))
    else:
        boundary = "hostile"
        sock.sendall(
            request_head("/cam", 1 << 20, f"multipart/form-data; boundary={boundary}")
            + f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
            + bytes(20)
        )
    return sock


@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_slow_client_does_not_hold_the_slot(tight: Replica, how: str) -> None:
    """(c) A client stalled in the middle of its body: other requests still get 200, at once."""
    url = tight.ensure().url
    sock = stall(url, how)
    try:
        time.sleep(0.3)
        for _ in range(3):
            start = time.perf_counter()
            r = post(url + "/cam", GOOD_JPEG, "raw")
            assert r.status_code == 200, r.text
            assert time.perf_counter() - start < 5.0
    finally:
        sock.close()


def test_stalled_clients_release_their_places(tight: Replica) -> None:
    """(c) As many stalled clients as there are admission places (slot + queue): each is answered (408) and
    its place freed within the queue timeout (10 s); the replica serves again right after."""
    url = tight.ensure().url
    socks = [stall(url, "raw"), stall(url, "multipart")]
    try:
        start = time.monotonic()
        deadline = start + 10.0 + 5.0
        answers = []
        for sock in socks:
            assert readable(sock, max(0.1, deadline - time.monotonic())), "a stalled client was never answered"
            answers.append(read_response(sock))
        waited = time.monotonic() - start
        assert all(400 <= a.status < 500 for a in answers), [(a.status, a.body[:200]) for a in answers]
        r = post(url + "/cam", GOOD_JPEG, "raw")
        assert r.status_code == 200, (
            f"after the stalled clients were answered ({waited:.1f} s): {r.status_code} {r.text[:200]}"
        )
    finally:
        for sock in socks:
            sock.close()
