"""A uvicorn replica under attack: started in a subprocess, restarted when an upload kills it, its peak
resident memory measured per request (``/proc/<pid>/clear_refs`` resets ``VmHWM``), and raw-socket HTTP
for the clients that the usual libraries will not imitate (headers now, the body later or never)."""

from __future__ import annotations

import http.client
import select
import socket
from dataclasses import dataclass, field
from pathlib import Path

from app.config import REPO_MODELS
from tests.live import Server

MiB = 1024 * 1024


def proc_status(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in kB (VmHWM, VmRSS), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's peak resident set (VmHWM) to its current one; False when the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class Replica:
    """The server under test.  :meth:`ensure` restarts it when the last request killed it, and says so once."""

    def __init__(self, logs: Path, **env: str) -> None:
        self.logs = logs
        self.env = {"LOCSVC_AUTH": "off", "LOCSVC_INTRA_OP_THREADS": "1", **env}
        self.starts = 0
        self.server = self._start()
        self.can_measure = reset_peak(self.pid)

    def _start(self) -> Server:
        self.starts += 1
        server = Server(self.logs / f"server-{self.starts}.log", REPO_MODELS, **self.env)
        server.wait_ready(timeout=240)
        kb = proc_status(server.proc.pid, "VmRSS")
        self.ready_mb = 0.0 if kb is None else kb / 1024  # resident memory once ready
        return server

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    @property
    def url(self) -> str:
        return self.server.url

    def alive(self) -> bool:
        return self.server.proc.poll() is None

    def death(self) -> str:
        """How the server ended, with the end of its log."""
        tail = self.server.output()[-2500:]
        return f"the server died (exit code {self.server.proc.returncode}); its log ends:\n{tail}"

    def ensure(self) -> Server:
        if not self.alive():
            self.server.stop()
            self.server = self._start()
        return self.server

    def reset_peak(self) -> bool:
        return self.can_measure and reset_peak(self.pid)

    def peak_mb(self) -> float | None:
        kb = proc_status(self.pid, "VmHWM")
        return None if kb is None else kb / 1024

    def rss_mb(self) -> float | None:
        kb = proc_status(self.pid, "VmRSS")
        return None if kb is None else kb / 1024

    def stop(self) -> None:
        self.server.stop()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    before_body: bool = False  # the answer came before the client sent its body
    notes: list[str] = field(default_factory=list)


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def request_head(
    path: str, length: int | None, content_type: str = "application/octet-stream", extra: str = ""
) -> bytes:
    length_line = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: replica\r\nContent-Type: {content_type}\r\n{length_line}{extra}"
        "Connection: close\r\n\r\n"
    ).encode()


def readable(sock: socket.socket, timeout: float) -> bool:
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def read_response(sock: socket.socket, timeout: float = 30.0) -> RawResponse:
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def send_headers_then_body(url: str, path: str, body: bytes, wait: float) -> RawResponse:
    """Send the headers (with the body's Content-Length), wait up to ``wait`` s for an answer before sending the
    body - as a client that honours an early response would - then send it if no answer came."""
    with connect(url) as sock:
        sock.sendall(request_head(path, len(body)))
        if readable(sock, wait):
            answer = read_response(sock)
            answer.before_body = True
            return answer
        notes = []
        try:
            sock.sendall(body)
        except OSError as exc:  # answered and closed while the body was on its way
            notes.append(f"sending the body: {exc!r}")
        answer = read_response(sock)
        answer.notes += notes
        return answer
