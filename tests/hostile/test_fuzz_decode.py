"""Fuzzing the decode path: whatever the bytes, a DecodedImage (8-bit RGB, at least 1x1) or a clean refusal.

``decode_image(data, max_pixels=50_000_000, max_bytes=200 MiB, fraction=...)`` may only return a
:class:`~app.core.imaging.DecodedImage` or raise a :class:`~app.errors.ServiceError` with status 413, 415
or 422.  Anything else - another exception, a crash, seconds of CPU, memory beyond the decode budget - is a
bug that an upload can trigger.  The inputs are small valid files of every format (:func:`seed_files`)
mutated by bit flips, byte overwrites with boundary values, insertions, deletions, duplications and
truncations, biased towards the headers.  Hypothesis runs derandomized (the same examples on every run, so
CI is reproducible) and bounded (well under a minute in all).

Also here, quick: every light case of the hostile corpus through ``decode_image`` (the expected outcome,
within the time and memory bounds), the decode budget checked from the header, and an in-process variant of
the fuzz through the app (tiny models, httpx over ASGI) that may never answer 5xx.

The decode-level tests decode in a child process (:mod:`tests.hostile.decode_worker`): a decoder that
segfaults or hangs fails the test that fed it instead of killing pytest; Pillow is configured there as the
service configures it (``configure_pillow``), and warnings behave as in the server (shown, not raised -
pytest's warnings-as-errors would otherwise turn a Pillow "corrupt EXIF" notice into an exception production
never sees).  Peak memory is the child's own (``VmHWM``, reset before each input).
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from app.config import Settings
from app.factory import create_app
from tests.hostile.corpus import BY_NAME, CASES, constant_rows, png, seed_files
from tests.hostile.decode_worker import CLEAN, MAX_BYTES, DecodeWorker, Outcome

SLACK_MB = 64  # what else a decode may allocate beyond the budget it computed (Python objects, the file itself)
MAX_SECONDS = 5.0  # for one small input: the service's whole job gets 10 s
SEEDS = seed_files()


# ------------------------------------------------------------------------------------------- harness


@pytest.fixture(scope="module")
def worker() -> Iterator[DecodeWorker]:
    w = DecodeWorker()
    yield w
    w.close()


def check(what: str, outcome: Outcome, max_bytes: int = MAX_BYTES) -> int:
    """The outcome's status, once it is known to be clean and within the time and memory bounds."""
    assert outcome.error is None, f"{what}: {outcome.error}"
    assert outcome.status is not None
    assert outcome.seconds <= MAX_SECONDS, f"{what}: {outcome.seconds:.1f} s"
    if outcome.growth_mb is not None:
        assert outcome.growth_mb <= max_bytes / 2**20 + SLACK_MB, (
            f"{what}: peak RSS rose {outcome.growth_mb:.0f} MB (budget {max_bytes / 2**20:.0f} MB)"
        )
    return outcome.status


@contextmanager
def warnings_as_in_production() -> Iterator[None]:
    """Warnings shown, never raised, while the in-process app decodes (as in a server process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------- mutations

INTERESTING = [
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x01",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x00\x01\x00\x00",
    b"\xff\xd8",
    b"\xff\xda",
]
position = st.one_of(st.integers(0, 64), st.integers(0, 1 << 16))  # biased towards the headers
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("set"), position, st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=4))),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), position, st.integers(1, 64)),
    st.tuples(st.just("duplicate"), position, st.integers(1, 256)),
    st.tuples(st.just("truncate"), position, st.just(0)),
)
Mutation = tuple[str, int, Any]


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    out = bytearray(data)
    for kind, pos, arg in mutations:
        at = pos % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << arg
        elif kind == "set":
            out[at : at + len(arg)] = arg
        elif kind == "insert":
            out[at:at] = arg
        elif kind == "delete":
            del out[at : at + arg]
        elif kind == "duplicate":
            out[at:at] = out[at : at + arg]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


FRACTIONS = st.sampled_from([1.0, 0.5, 0.3, 0.125, 0.05, 0.01])


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.sampled_from(sorted(SEEDS)), mutations=st.lists(mutation, min_size=1, max_size=4), fraction=FRACTIONS)
def test_mutated_file_decodes_or_is_refused_cleanly(
    worker: DecodeWorker, seed: str, mutations: list[Mutation], fraction: float
) -> None:
    note(f"seed={seed!r} mutations={mutations!r} fraction={fraction!r}")
    check(f"{seed} mutated {mutations}", worker.decode(mutate(SEEDS[seed], mutations), fraction))


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_decodes(worker: DecodeWorker, seed: str) -> None:
    """The seeds themselves are valid (else the fuzz would mutate garbage)."""
    assert check(seed, worker.decode(SEEDS[seed], 1.0)) == 200


# ------------------------------------------------------------------------------------------- corpus


@pytest.mark.parametrize("name", [c.name for c in CASES if not c.heavy])
def test_corpus_case_decodes_as_expected(worker: DecodeWorker, name: str) -> None:
    """Every light case of the corpus: the expected outcome, within the time and memory bounds."""
    case = BY_NAME[name]
    status = check(f"{name} ({case.why})", worker.decode(case.data, 224 / 2400))
    assert status in case.expect, f"{name} ({case.why}): {status}, expected one of {sorted(case.expect)}"


def test_decode_budget_is_checked_from_the_header(worker: DecodeWorker) -> None:
    """A 2000x2000 RGBA PNG (16 MB decoded, 25 kB of file) over a 4 MiB budget: 413 at once, nothing decoded."""
    data = png(2000, 2000, constant_rows(8000, 2000, bytes([10, 200, 30, 128])), depth=8, color=6)
    refused = worker.decode(data, 1.0, max_bytes=4 << 20)
    assert check("over the budget", refused, max_bytes=4 << 20) == 413
    assert refused.seconds < 0.5, refused.seconds
    assert refused.growth_mb is None or refused.growth_mb < 8, (
        f"peak RSS rose {refused.growth_mb:.0f} MB: the pixels were decoded"
    )
    assert check("within the budget", worker.decode(data, 1.0, max_bytes=1 << 30), max_bytes=1 << 30) == 200


# --------------------------------------------------------------------------------------- through the app


@pytest.fixture(scope="module")
def app_client(tiny_models_dir: Path) -> Iterator[Callable[..., httpx.Response]]:
    """A blocking ``post(path, **kw)`` on the app (tiny models, auth off, its lifespan running) over ASGI."""
    app = create_app(Settings(models_dir=tiny_models_dir, auth=False, log_json=True))

    @asynccontextmanager
    async def running() -> AsyncIterator[httpx.AsyncClient]:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):
            yield client

    with anyio.from_thread.start_blocking_portal() as portal, portal.wrap_async_context_manager(running()) as client:

        def post(path: str, **kw: Any) -> httpx.Response:
            return portal.call(lambda: client.post(path, **kw))

        yield post


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    mutations=st.lists(mutation, min_size=1, max_size=3),
    path=st.sampled_from(["/cam", "/localize", "/pose"]),
    multipart=st.booleans(),
)
def test_mutated_upload_never_5xx(
    app_client: Callable[..., httpx.Response], seed: str, mutations: list[Mutation], path: str, multipart: bool
) -> None:
    data = mutate(SEEDS[seed], mutations)
    note(f"seed={seed!r} mutations={mutations!r} path={path!r} multipart={multipart!r}")
    with warnings_as_in_production():
        if multipart:
            r = app_client(path, files={"image": ("upload.bin", data, "application/octet-stream")})
        else:
            r = app_client(path, content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 or r.status_code in CLEAN, (
        f"{seed} mutated {mutations} to {path}: {r.status_code} {r.text[:300]}"
    )
