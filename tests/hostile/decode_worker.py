"""``decode_image`` in a child process, so that a decoder that crashes (a segfault, an abort on a corrupted heap)
or hangs fails the one test that fed it, rather than taking pytest down with it.

:class:`DecodeWorker` starts ``python -m tests.hostile.decode_worker`` and sends it one input at a time over a
pipe; the child decodes it with the service's limits and Pillow configured as the service configures it, and
answers with the outcome, the time it took and how far its peak resident memory rose (``VmHWM``, reset before
each input through ``/proc/self/clear_refs``).  A dead or stuck child is reported and replaced.
"""

from __future__ import annotations

import contextlib
import faulthandler
import inspect
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 50_000_000
MAX_BYTES = 200 * 1024 * 1024
CLEAN = (413, 415, 422)


@dataclass(frozen=True)
class Outcome:
    """What became of one input.  ``status``: 200 (a DecodedImage), the ServiceError's status, or None when
    the decode raised anything else (``error``), crashed or hung (``error`` says which)."""

    status: int | None
    error: str | None
    seconds: float
    growth_mb: float | None  # peak RSS above the RSS before the decode; None where it cannot be measured

    def describe(self) -> str:
        return f"status {self.status}" if self.error is None else self.error


# ------------------------------------------------------------------------------------------ the child


def _configure_as_in_production() -> None:
    """Pillow as the service configures it; warnings shown, never raised (as in a server process)."""
    from PIL import Image

    from app.core import imaging

    warnings.simplefilter("ignore")
    configure = getattr(imaging, "configure_pillow", None)
    if configure is not None:
        configure(MAX_PIXELS)
    else:  # the service before configure_pillow: its lifespan only lifted Pillow's own limit
        Image.MAX_IMAGE_PIXELS = None


def _decode(data: bytes, fraction: float, max_bytes: int) -> Any:
    """``decode_image`` with the service's limits (the older signature too, so that the same inputs can be
    replayed against the code from before the hostile-uploads work)."""
    from app.core import imaging

    fn: Any = imaging.decode_image
    if "max_bytes" in inspect.signature(fn).parameters:
        return fn(data, max_pixels=MAX_PIXELS, max_bytes=max_bytes, fraction=fraction)
    return fn(data, max_pixels=MAX_PIXELS, needed_fraction=lambda w, h: fraction, jpeg_threads=2)


def _status_kb(key: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _handle(data: bytes, fraction: float, max_bytes: int) -> dict[str, Any]:
    from app.errors import ServiceError

    measured = _reset_peak()
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        d = _decode(data, fraction, max_bytes)
        problems = []
        if d.image.mode != "RGB":
            problems.append(f"mode {d.image.mode}")
        if min(d.image.width, d.image.height, d.width, d.height) < 1:
            problems.append(f"size {d.image.size}, reported {d.width}x{d.height}")
        if problems:
            error = "a DecodedImage that is not 8-bit RGB of at least 1x1: " + ", ".join(problems)
        else:
            status = 200
    except ServiceError as exc:
        status = exc.status
        if exc.status not in CLEAN:
            error = f"refused with {exc.status} ({type(exc).__name__}: {exc.detail})"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)[-6:])
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    growth = (peak - before) / 1024 if measured and peak is not None and before is not None else None
    return {"status": status, "error": error, "seconds": seconds, "growth_mb": growth}


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def main() -> None:
    faulthandler.enable()
    _configure_as_in_production()
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        try:
            head_len, data_len = struct.unpack("<IQ", _read_exact(stdin, 12))
            head = json.loads(_read_exact(stdin, head_len))
            data = _read_exact(stdin, data_len)
        except EOFError:
            return
        stdout.write(json.dumps(_handle(data, head["fraction"], head["max_bytes"])) + "\n")
        stdout.flush()


# ----------------------------------------------------------------------------------------- the parent


class DecodeWorker:
    """A child process that decodes inputs one at a time; replaced when one kills or hangs it."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: IO[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the child's life, closed in _discard
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hostile.decode_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        return self.proc

    def _stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-1500:]

    def _discard(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self.stderr is not None:
            self.stderr.close()
        self.proc = self.stderr = None

    def decode(self, data: bytes, fraction: float, max_bytes: int = MAX_BYTES) -> Outcome:
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        head = json.dumps({"fraction": fraction, "max_bytes": max_bytes}).encode()
        start = time.perf_counter()
        try:
            proc.stdin.write(struct.pack("<IQ", len(head), len(data)) + head + data)
            proc.stdin.flush()
        except OSError:
            pass  # the child is dead: reported below
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout_s)
        line = proc.stdout.readline() if ready else b""
        if line:
            return Outcome(**json.loads(line))
        seconds = time.perf_counter() - start
        if proc.poll() is None:
            error = f"the decode hung: no answer within {self.timeout_s:g} s"
        else:
            code = proc.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            error = f"the decoding process crashed ({how}); its stderr ends:\n{self._stderr_tail()}"
        self._discard()
        return Outcome(None, error, seconds, None)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._discard()


if __name__ == "__main__":
    main()
