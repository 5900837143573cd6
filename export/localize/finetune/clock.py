"""Time of a fine-tuning run: the hard deadline, the process' age, and progress against the plan (ETA)."""

from __future__ import annotations

import time
from collections.abc import Callable


class OutOfTime(Exception):
    """The hard deadline (``--budget-s`` + ``--grace-s``) passed; training stops where it is."""


def process_age() -> float:
    """Seconds since this process started (``psutil``), so the budget includes Python's start-up.

    0 where psutil is not installed (a bare GPU machine may lack it) or cannot tell.
    """
    try:
        import psutil
    except ImportError:
        return 0.0
    try:
        return max(0.0, time.time() - float(psutil.Process().create_time()))
    except (psutil.Error, OSError):
        return 0.0


class Clock:
    """Elapsed seconds (from ``startup_s`` before now); ``check()`` raises ``OutOfTime`` after the hard deadline."""

    def __init__(self, hard_s: float | None, startup_s: float = 0.0) -> None:
        self.t0 = time.time() - startup_s
        self.hard_s = hard_s

    def elapsed(self) -> float:
        """Seconds since the clock's origin."""
        return time.time() - self.t0

    def check(self) -> None:
        """Raise ``OutOfTime`` past the hard deadline."""
        if self.hard_s is not None and self.elapsed() > self.hard_s:
            raise OutOfTime(f"hard deadline {self.hard_s:.0f}s reached")


class Progress:
    """Counts training/eval images against the plan, for img/s and ETA lines."""

    def __init__(self, clock: Clock, log: Callable[[str], None]) -> None:
        self.clock, self.log = clock, log
        self.plan_train = self.plan_eval = 0
        self.done_train = self.done_eval = 0
        self.rate_train, self.rate_eval = 1.0, 3.0

    def eta(self) -> float:
        """Seconds the planned work still needs at the last measured rates."""
        left_train = max(0, self.plan_train - self.done_train)
        left_eval = max(0, self.plan_eval - self.done_eval)
        return left_train / max(self.rate_train, 1e-6) + left_eval / max(self.rate_eval, 1e-6)
