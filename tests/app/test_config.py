"""Settings defaults that depend on the machine: threads per inference from the cores and the slots."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app import config
from app.config import Settings


@pytest.mark.parametrize(
    ("cores", "slots", "threads"),
    [(2, 4, 1), (4, 4, 1), (6, 4, 2), (8, 4, 2), (16, 4, 4), (2, 1, 2), (1, 1, 1)],
)
def test_threads_per_inference_fill_the_cores_when_every_slot_is_busy(
    monkeypatch: pytest.MonkeyPatch, cores: int, slots: int, threads: int
) -> None:
    monkeypatch.setattr(config, "cpu_cores", lambda: cores)
    monkeypatch.delenv("LOCSVC_INTRA_OP_THREADS", raising=False)
    assert Settings(max_concurrency=slots).intra_op_threads == threads


def test_the_slots_from_the_environment_set_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "cpu_cores", lambda: 8)
    monkeypatch.delenv("LOCSVC_INTRA_OP_THREADS", raising=False)
    monkeypatch.setenv("LOCSVC_MAX_CONCURRENCY", "2")
    assert Settings().intra_op_threads == 4


def test_threads_named_win_over_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "cpu_cores", lambda: 2)
    monkeypatch.setenv("LOCSVC_INTRA_OP_THREADS", "2")
    assert Settings().intra_op_threads == 2
    assert Settings(intra_op_threads=3).intra_op_threads == 3


def test_an_invalid_slot_count_is_refused_without_a_crash_in_the_thread_rule() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Settings(max_concurrency=0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_cores_are_those_this_process_may_run_on() -> None:
    """A container's cpuset (or ``taskset``) limits the cores: the rule sees one core, not the machine's."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from app.config import Settings, cpu_cores; print(cpu_cores(), Settings(max_concurrency=1).intra_op_threads)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LOCSVC_INTRA_OP_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1", "1"]
