"""Process tuning for a small CPU box: the BLAS thread cap, onnxruntime's shared arena, session options and
execution provider, large blocks mapped on their own and freed heap handed back to the OS, and the watchdog
that stops onnxruntime runs past their deadline."""

from __future__ import annotations

import ctypes
import heapq
import importlib
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from threadpoolctl import threadpool_info, threadpool_limits  # type: ignore[import-untyped]

from app.config import Settings
from app.errors import ConfigurationError


def limit_blas_threads(n: int) -> int:
    """Give every BLAS loaded in this process (numpy's OpenBLAS, and scipy's where a bench script loads it) ``n``
    threads; returns how many libraries are limited (``n < 1``: none, their default stays).

    The service's BLAS calls are tiny (the CAM maps), and it runs several requests at once: a BLAS
    pool of one thread per core, spinning after each call, only takes the cores from onnxruntime."""
    if n < 1:
        return 0
    threadpool_limits(limits=n, user_api="blas")
    return sum(1 for lib in threadpool_info() if lib["user_api"] == "blas")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters, <malloc.h>
LARGE_BLOCK_BYTES = 8 << 20  # below Pillow's 16 MiB image blocks, above a 12 MP upload's bytes


def map_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Give every C allocation of ``threshold`` bytes or more its own mapping, unmapped when it is freed, and
    trim a heap's free top beyond twice that (glibc only; False elsewhere).

    glibc's default raises its mmap threshold to the size of each mapped block freed, up to 32 MiB. After the
    first large decode, Pillow's 16 MiB image blocks come from the heap of the worker thread that decodes, and
    each thread's heap keeps its largest decode once it is freed: the process then grows with its worker
    threads, not within the decode memory that the jobs share (``LOCSVC_MAX_DECODE_BYTES``). Setting the
    thresholds stops glibc from moving them (see docs/decisions/large-blocks-mmap.md)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
    except (OSError, AttributeError):
        return False


def release_free_heap() -> bool:
    """Hand the C heap freed while loading (ONNX protos, graph optimization) back to the OS (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


_shared_arena_lock = threading.Lock()
_shared_arena = False


def _register_shared_arena() -> None:
    """One CPU arena in onnxruntime's environment, used by every session that opts in: it holds the peak of
    the runs in flight (at most max_concurrency) instead of one peak per model; grows only as requested."""
    global _shared_arena
    with _shared_arena_lock:
        if not _shared_arena:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: kSameAsRequested
            _shared_arena = True


def session_options(settings: Settings) -> ort.SessionOptions:
    """onnxruntime options tuned for a small CPU box; every knob comes from Settings."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.intra_op_threads
    so.inter_op_num_threads = settings.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = settings.ort_arena != "off"
    if settings.ort_arena == "shared":
        _register_shared_arena()
        so.add_session_config_entry("session.use_env_allocators", "1")
    spin = "1" if settings.ort_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    return so


class ProviderError(ConfigurationError):
    """The execution provider named in the settings cannot be created (the service does not start on another)."""


OPENVINO = "OpenVINOExecutionProvider"
PLUGIN = "onnxruntime_ep_openvino"
_openvino_lock = threading.Lock()
_openvino: ort.OrtEpDevice | str | None = None  # OpenVINO's CPU device, or why there is none; None: not looked up
_ADVICE = "set LOCSVC_EXECUTION_PROVIDER=auto or cpu"
_MISSING = f"the package {PLUGIN.replace('_', '-')} is not installed (x86-64 only)"


def check_provider(settings: Settings) -> None:
    """Raise :class:`ProviderError` when the settings name ``openvino`` and its plugin is not installed (cheap:
    imports nothing)."""
    if settings.execution_provider == "openvino" and importlib.util.find_spec(PLUGIN) is None:
        raise ProviderError(f"LOCSVC_EXECUTION_PROVIDER=openvino: {_MISSING}; install it, or {_ADVICE}")


def cache_problem(settings: Settings) -> str | None:
    """Why ``openvino_cache_dir`` cannot be OpenVINO's model cache (it cannot be created, or written), after
    creating it if missing; ``None`` when it can, or is unset.  OpenVINO fails the compile, and so the model,
    where it cannot write its cache: without one, a start only compiles again."""
    cache = settings.openvino_cache_dir
    if cache is None:
        return None
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"LOCSVC_OPENVINO_CACHE_DIR={cache} cannot be created ({exc.strerror})"
    if not os.access(cache, os.W_OK | os.X_OK):
        return f"LOCSVC_OPENVINO_CACHE_DIR={cache} is not writable by this process"
    return None


def _openvino_lookup() -> ort.OrtEpDevice | str:
    """OpenVINO's CPU device, its plugin library registered with onnxruntime once per process, or why there is
    none (the plugin is missing, or it offers no device on this CPU: version 1.8.1 lists Intel CPUs only)."""
    global _openvino
    with _openvino_lock:
        if _openvino is None:
            try:
                plugin = importlib.import_module(PLUGIN)
            except ImportError:
                _openvino = _MISSING
            else:
                ort.register_execution_provider_library("openvino", plugin.get_library_path())
                cpus = [d for d in ort.get_ep_devices() if d.device.type == ort.OrtHardwareDeviceType.CPU]
                devices = [d for d in cpus if d.ep_name == OPENVINO and d.ep_metadata.get("ov_device") == "CPU"]
                vendor = cpus[0].device.vendor if cpus else "unknown"
                _openvino = (
                    devices[0] if devices else f"OpenVINO's plugin offers no device on this CPU (vendor {vendor})"
                )
        return _openvino


def _openvino_cpu() -> ort.OrtEpDevice:
    """OpenVINO's CPU device; :class:`ProviderError` saying why when there is none."""
    found = _openvino_lookup()
    if isinstance(found, str):
        raise ProviderError(f"LOCSVC_EXECUTION_PROVIDER=openvino: {found}; {_ADVICE}")
    return found


def resolve_provider(settings: Settings) -> tuple[Literal["openvino", "cpu"], str | None]:
    """The provider the fp32 models run on, and why it is not OpenVINO when ``auto`` fell back: ``auto`` is
    OpenVINO where its plugin offers this CPU, else onnxruntime's CPU provider; ``openvino`` raises
    :class:`ProviderError` where it cannot be created."""
    if settings.execution_provider == "cpu":
        return "cpu", None
    if settings.execution_provider == "openvino":
        _openvino_cpu()
        return "openvino", None
    found = _openvino_lookup()
    return ("cpu", found) if isinstance(found, str) else ("openvino", None)


def create_session(path: Path, settings: Settings) -> ort.InferenceSession:
    """The onnxruntime session of one model file on the settings' execution provider.

    On OpenVINO (``openvino``, or ``auto`` where its plugin offers this CPU): the whole graph on its CPU plugin
    (no silent fallback to onnxruntime's kernels: a node it cannot run fails the session), fp32 precision pinned
    (on a CPU with bf16 units its default is bf16, which changes the answers), ``max_concurrency`` streams (a
    stream runs one request at a time; one stream would serialize the requests) of ``intra_op_threads`` threads
    each, which OpenVINO caps at the cores in all: on 2 cores the defaults give 2 streams of one thread, which
    the 4 requests in inference share; with ``openvino_cache_dir``, compiled once and loaded from there on later
    starts (an int8 twin compiles in 0.4-0.5 s). Raises :class:`ProviderError` if the provider cannot be created,
    onnxruntime's error if the file is not a graph it can run."""
    so = session_options(settings)
    if resolve_provider(settings)[0] == "cpu":
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    cpu = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": str(settings.intra_op_threads * settings.max_concurrency),
        "NUM_STREAMS": str(settings.max_concurrency),
    }
    if settings.openvino_cache_dir is not None:
        cpu["CACHE_DIR"] = str(settings.openvino_cache_dir)
    options = {"load_config": json.dumps({"CPU": cpu})}
    so.add_provider_for_devices([_openvino_cpu()], options)
    session = ort.InferenceSession(str(path), so)
    if session.get_providers()[0] != OPENVINO:
        raise ProviderError(f"{path.name}: OpenVINO was not given the graph (providers {session.get_providers()})")
    return session


class Watchdog:
    """Sets ``RunOptions.terminate`` on the runs that pass their deadline, from one daemon thread.

    ``threading.Timer`` per run started (and stopped) a thread for every inference, ~0.2 ms of CPU each
    plus a wake-up of that thread; here a run only pushes its deadline on a heap, and the thread
    sleeps until the earliest one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, ort.RunOptions]] = []
        self._seq = 0
        self._active: set[int] = set()
        self._thread: threading.Thread | None = None

    def watch(self, options: ort.RunOptions, timeout_s: float) -> int:
        """Terminate ``options``' run after ``timeout_s`` unless :meth:`done` is called first."""
        with self._cond:
            self._seq += 1
            ticket = self._seq
            deadline = time.monotonic() + timeout_s
            self._active.add(ticket)
            heapq.heappush(self._heap, (deadline, ticket, options))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="ort-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == ticket:
                self._cond.notify()  # a new earliest deadline
        return ticket

    def done(self, ticket: int) -> None:
        with self._cond:
            self._active.discard(ticket)
            if len(self._heap) > 2 * len(self._active) + 64:
                # Finished runs leave their entries until the earliest deadline passes: drop them now and
                # then, so that the heap (and the RunOptions it holds) stays about as small as the runs in flight.
                self._heap = [e for e in self._heap if e[1] in self._active]
                heapq.heapify(self._heap)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, ticket, options = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._active.discard(ticket)
                options.terminate = True


WATCHDOG = Watchdog()
