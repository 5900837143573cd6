"""Progress lines of the export commands through :mod:`logging`.

Every module logs to a child of the ``export`` logger, whose one handler prints the bare message on the
current ``sys.stdout`` and flushes (what ``print(..., flush=True)`` did).  ``log_to_file`` adds a file handler
for the duration of a run (the fine-tune command copies its log into its output folder) and removes it after.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = "export"
FORMAT = "%(message)s"


class ConsoleHandler(logging.Handler):
    """Writes each record to whatever ``sys.stdout`` is at that moment (so captured output sees it), flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def _configure() -> logging.Logger:
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, ConsoleHandler) for h in root.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name`` (``__name__``), under ``export`` so that its lines reach the console."""
    _configure()
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Copy every ``export`` log line to ``path`` (truncated first) until the block ends."""
    root = _configure()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
