"""Model registry: sidecars -> checked ONNX files -> warmed-up onnxruntime sessions."""

from __future__ import annotations

import ctypes
import hashlib
import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.config import Settings
from app.core.cam import cam_scores, class_activation_maps
from app.core.fitting import InputSpec
from app.errors import InvalidParameter, ModelNotFound, RequestTimeout
from app.sidecar import Sidecar, Task

log = logging.getLogger("app.registry")
Arrays = dict[str, npt.NDArray[np.float32]]


class ModelLoadError(RuntimeError):
    """A model listed in models_dir cannot be served (bad sidecar, checksum, or outputs)."""


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_BLAS_THREAD_SETTERS = (
    "scipy_openblas_set_num_threads64_",  # numpy's bundled OpenBLAS (ILP64)
    "scipy_openblas_set_num_threads",  # scipy's
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def limit_blas_threads(n: int) -> int:
    """Give every OpenBLAS loaded in this process (numpy's, scipy's) ``n`` threads; returns how many
    libraries were set.  Linux only (the libraries are found in /proc/self/maps); elsewhere nothing.

    The service's BLAS calls are tiny (the CAM maps), and it runs several requests at once: a BLAS
    pool of one thread per core, spinning after each call, only takes the cores from onnxruntime."""
    if n < 1:
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "blas" in line.lower() and ".so" in line})
    done = 0
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_THREAD_SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                done += 1
                break
    return done


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


@dataclass
class LoadedModel:
    """One servable model: its sidecar, session, and (for CAM-capable models) the dense layer."""

    sidecar: Sidecar
    session: ort.InferenceSession
    path: Path
    spec: InputSpec
    cam_weight: npt.NDArray[np.float32] | None = None
    cam_bias: npt.NDArray[np.float32] | None = None
    warmup_ms: float = 0.0
    _label_index: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.sidecar.name

    def run(self, batch: npt.NDArray[np.float32], outputs: Sequence[str], timeout_s: float | None = None) -> Arrays:
        """Run the session and return the requested contract outputs by contract name; a run longer than
        ``timeout_s`` is terminated (503)."""
        names = [self.sidecar.outputs[o] for o in outputs]
        feed = {self.sidecar.input.name: batch}
        if timeout_s is None:
            return dict(zip(outputs, map(np.asarray, self.session.run(names, feed)), strict=True))
        options = ort.RunOptions()
        ticket = WATCHDOG.watch(options, timeout_s)
        try:
            values = self.session.run(names, feed, options)
        except Exception as exc:
            if options.terminate:
                raise RequestTimeout("the request ran out of time in inference and was stopped; retry later") from exc
            raise
        finally:
            WATCHDOG.done(ticket)
        return dict(zip(outputs, map(np.asarray, values), strict=True))

    def resolve_class(self, class_id: int | None, label: str | None) -> int | None:
        """Class index from ``class_id`` or ``label`` (dataset id, name, or one of its aliases)."""
        n = len(self.sidecar.labels)
        if class_id is not None:
            if not 0 <= class_id < n:
                raise InvalidParameter(f"class_id must be in [0, {n - 1}] for model {self.name}", field="class_id")
            return class_id
        if label is None:
            return None
        key = label.strip().lower()
        if key in self._label_index:
            return self._label_index[key]
        raise InvalidParameter(
            f"unknown label {label!r} for model {self.name}: give a dataset id (e.g. "
            f"{self.sidecar.labels[0].id!r}) or a class name (see GET /models/{self.name})",
            field="label",
        )

    def build_label_index(self) -> None:
        index: dict[str, int] = {}
        for lab in self.sidecar.labels:
            aliases = str(getattr(lab, "aliases", "") or "")
            keys = [lab.id, lab.name, *(a for a in aliases.split(","))]
            for k in keys:
                index.setdefault(k.strip().lower(), lab.index)
        self._label_index = index


def load_model(sidecar_path: Path, settings: Settings) -> LoadedModel:
    try:
        sidecar = Sidecar.model_validate(json.loads(sidecar_path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{sidecar_path}: unreadable sidecar: {exc}") from exc
    onnx_path = sidecar_path.parent / sidecar.file
    if not onnx_path.is_file():
        raise ModelLoadError(f"{sidecar_path}: model file {onnx_path} is missing")
    if settings.verify_sha256 and sha256_file(onnx_path) != sidecar.sha256:
        raise ModelLoadError(f"{onnx_path}: sha256 does not match its sidecar (file changed or corrupt)")
    session = ort.InferenceSession(str(onnx_path), session_options(settings), providers=["CPUExecutionProvider"])
    produced = {o.name for o in session.get_outputs()}
    missing = set(sidecar.outputs.values()) - produced
    if missing:
        raise ModelLoadError(f"{onnx_path}: outputs {sorted(missing)} named in the sidecar are not in the graph")
    model = LoadedModel(sidecar, session, onnx_path, sidecar.input_spec())
    model.build_label_index()
    _warm_up(model)
    return model


def _warm_up(model: LoadedModel) -> None:
    """One inference on a blank image; caches W and b and checks the CAM identity on the output."""
    spec = model.spec
    batch = np.zeros((1, 3, spec.height, spec.width), dtype=np.float32)
    t0 = time.perf_counter()
    outputs = list(model.sidecar.outputs)
    got = model.run(batch, outputs)
    model.warmup_ms = (time.perf_counter() - t0) * 1000
    if model.sidecar.has_cam:
        w, b = got["cam_weight"].astype(np.float32), got["cam_bias"].astype(np.float32)
        feats, logits = got["features"][0], got["logits"][0]
        classes = np.arange(w.shape[0])
        err = float(np.max(np.abs(cam_scores(class_activation_maps(feats, w, classes), b) - logits)))
        if err > 1e-3 * max(1.0, float(np.max(np.abs(logits)))):
            raise ModelLoadError(f"{model.path}: CAM identity mean(W.V)+b = logits fails by {err:.3g}")
        model.cam_weight, model.cam_bias = w, b
        if len(model.sidecar.labels) != w.shape[0]:
            raise ModelLoadError(f"{model.path}: {len(model.sidecar.labels)} labels for {w.shape[0]} classes")


@dataclass
class Registry:
    models: dict[str, LoadedModel]
    defaults: dict[Task, str]

    @classmethod
    def load(cls, settings: Settings, on_loaded: Callable[[LoadedModel], None] | None = None) -> Registry:
        limit_blas_threads(settings.blas_threads)
        paths = sorted(settings.models_dir.glob("*.json"))
        models: dict[str, LoadedModel] = {}
        for p in paths:
            if settings.models and p.stem not in settings.models:
                continue
            m = load_model(p, settings)
            if m.name in models:
                raise ModelLoadError(f"two sidecars name the model {m.name!r}")
            models[m.name] = m
            log.info("model loaded", extra={"model": m.name, "task": m.sidecar.task.value, "warmup_ms": round(m.warmup_ms, 1)})
            if on_loaded:
                on_loaded(m)
        wanted = {Task.cam: settings.default_cam_model, Task.localize: settings.default_localize_model, Task.pose: settings.default_pose_model}
        defaults: dict[Task, str] = {}
        for task, name in wanted.items():
            if name is not None:
                if name not in models:
                    raise ModelLoadError(f"default {task.value} model {name!r} is not loaded")
                defaults[task] = name
            else:
                first = next((m.name for m in models.values() if m.sidecar.task is task), None)
                if first is None and task is Task.cam:  # any CAM-capable model serves /cam
                    first = next((m.name for m in models.values() if m.sidecar.has_cam), None)
                if first is not None:
                    defaults[task] = first
        release_free_heap()
        return cls(models, defaults)

    def get(self, task: Task, name: str | None) -> LoadedModel:
        """The named model (it must fit the task), or the task's default."""
        if name is None:
            if task not in self.defaults:
                raise ModelNotFound(f"no {task.value} model is loaded", field="model")
            return self.models[self.defaults[task]]
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r}; loaded: {sorted(self.models)}", field="model")
        fits = model.sidecar.has_cam if task is Task.cam else model.sidecar.task is task
        if not fits:
            raise InvalidParameter(f"model {name!r} ({model.sidecar.task.value}) cannot serve /{task.value}", field="model")
        return model

    def for_task(self, task: Task) -> Iterable[LoadedModel]:
        return (m for m in self.models.values() if (m.sidecar.has_cam if task is Task.cam else m.sidecar.task is task))
