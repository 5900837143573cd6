"""The inference-timeout watchdog: one thread terminates the runs that pass their deadline, and only those."""

from __future__ import annotations

import time

import onnxruntime as ort

from app.runtime import Watchdog


def test_watchdog_terminates_late_runs_only() -> None:
    dog = Watchdog()
    late, on_time, later = ort.RunOptions(), ort.RunOptions(), ort.RunOptions()
    dog.done(dog.watch(on_time, 0.05))  # finished before its deadline
    dog.watch(later, 0.2)
    dog.watch(late, 0.05)  # an earlier deadline than the one the thread sleeps on
    deadline = time.monotonic() + 5
    while not late.terminate and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late.terminate
    assert not later.terminate
    assert not on_time.terminate
    while not later.terminate and time.monotonic() < deadline:
        time.sleep(0.01)
    assert later.terminate and not on_time.terminate


def test_watchdog_uses_one_thread() -> None:
    dog = Watchdog()
    for _ in range(50):
        dog.done(dog.watch(ort.RunOptions(), 30))
    first = dog._thread
    dog.done(dog.watch(ort.RunOptions(), 30))
    assert first is not None and dog._thread is first and first.daemon


def test_watchdog_forgets_finished_runs() -> None:
    dog = Watchdog()
    for _ in range(1000):
        dog.done(dog.watch(ort.RunOptions(), 30))
    assert len(dog._heap) <= 64 + 1
