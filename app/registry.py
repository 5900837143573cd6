"""Model registry: sidecars -> checked ONNX files -> warmed-up onnxruntime sessions, each checked and bound
for the tasks that serve it (:mod:`app.tasks`).  A model that fails is refused, with one log line naming its
file and the field at fault; the others are served."""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
from pydantic import ValidationError

from app.config import Settings, cpu_cores
from app.errors import InvalidParameter, ModelNotFound
from app.model import Arrays, LoadedModel, ModelLoadError
from app.runtime import (
    ProviderError,
    create_session,
    limit_blas_threads,
    map_large_blocks,
    release_free_heap,
    resolve_provider,
)
from app.schemas import Refusal
from app.sidecar import Sidecar, Task
from app.tasks import TASKS, Tasks, TaskSpec, bind_all, link_all

# LoadedModel, ModelLoadError and limit_blas_threads: still importable from here (bench/, tests/bench/).
__all__ = ["LoadedModel", "ModelLoadError", "Registry", "limit_blas_threads", "load_model"]

log = logging.getLogger("app.registry")
M = TypeVar("M", bound=LoadedModel)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_sidecar(path: Path) -> Sidecar:
    try:
        return Sidecar.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(path, None, f"unreadable sidecar: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ModelLoadError(path, None, f"not valid JSON: {err['msg']}") from exc
        field = ".".join(str(part) for part in err["loc"]) or None
        got = f", got {err['input']!r}" if isinstance(err["input"], str | int | float) else ""
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ModelLoadError(path, field, f"{err['msg']}{got}{more}") from exc


def load_model(sidecar_path: Path, settings: Settings, tasks: Tasks = TASKS) -> LoadedModel:
    """The model of one sidecar, warmed up, checked and bound for every task that serves it (so it is a
    :class:`~app.model.CamModel` when it serves /cam, a :class:`~app.model.PoseModel` when it serves /pose)."""
    sidecar = read_sidecar(sidecar_path)
    onnx_path = sidecar_path.parent / sidecar.file
    if not onnx_path.is_file():
        raise ModelLoadError(sidecar_path, "file", f"model file {onnx_path} is missing")
    if settings.verify_sha256 and sha256_file(onnx_path) != sidecar.sha256:
        raise ModelLoadError(sidecar_path, "sha256", f"{onnx_path.name} does not match it (file changed or corrupt)")
    try:
        session = create_session(onnx_path, settings)
    except ProviderError:
        raise
    except Exception as exc:  # onnxruntime raises its own (untyped) exceptions for a bad graph
        raise ModelLoadError(sidecar_path, "file", f"onnxruntime cannot load {onnx_path.name}: {exc}") from exc
    missing = set(sidecar.outputs.values()) - {o.name for o in session.get_outputs()}
    if missing:
        raise ModelLoadError(sidecar_path, "outputs", f"{sorted(missing)} named in the sidecar are not in the graph")
    model = LoadedModel(
        sidecar,
        session,
        onnx_path,
        sidecar.input_spec(),
        sidecar_path,
        label_index=LoadedModel.build_label_index(sidecar),
    )
    warm = _warm_up(model)
    return bind_all(model, warm, tasks)


def _warm_up(model: LoadedModel) -> Arrays:
    """One inference on a blank image, every output; its outputs are what the tasks check at load."""
    spec = model.spec
    batch = np.zeros((1, 3, spec.height, spec.width), dtype=np.float32)
    t0 = time.perf_counter()
    warm = model.run(batch, list(model.sidecar.outputs))
    model.warmup_ms = (time.perf_counter() - t0) * 1000
    return warm


@dataclass
class Registry:
    models: dict[str, LoadedModel]
    defaults: dict[str, str]  # task name -> its default model
    refused: dict[str, Refusal]  # sidecar file name -> why it is not served
    tasks: Tasks = TASKS

    @classmethod
    def load(cls, settings: Settings, tasks: Tasks = TASKS) -> Registry:
        """Every sidecar of models_dir (or those named in ``settings.models``); a model that fails is refused
        and logged at ERROR.  A default model named in settings that is not loaded fails start-up."""
        limit_blas_threads(settings.blas_threads)
        map_large_blocks()  # a freed decode goes back to the OS, whichever worker thread decoded it
        provider, why_not_openvino = resolve_provider(settings)
        log.info(
            "execution provider: %s%s; requests in inference: %d, onnxruntime threads per inference: %d",
            provider,
            f" ({why_not_openvino})" if why_not_openvino else "",
            settings.max_concurrency,
            settings.intra_op_threads,
            extra={
                "provider": provider,
                "setting": settings.execution_provider,
                "max_concurrency": settings.max_concurrency,
                "intra_op_threads": settings.intra_op_threads,
            },
        )
        models: dict[str, LoadedModel] = {}
        refused: dict[str, Refusal] = {}
        paths = [
            p for p in sorted(settings.models_dir.glob("*.json")) if not settings.models or p.stem in settings.models
        ]
        # One loader thread per core: hashing, compiling and the warm-up run release the GIL.
        with ThreadPoolExecutor(max_workers=cpu_cores()) as pool:
            loading = [(path, pool.submit(load_model, path, settings, tasks)) for path in paths]
        for path, future in loading:
            try:
                m = future.result()
                if m.name in models:
                    raise ModelLoadError(path, "name", f"{m.name!r} is already the name of {models[m.name].path.name}")
            except ModelLoadError as exc:
                _refuse(refused, path, exc)
                continue
            models[m.name] = m
            log.info(
                "model loaded",
                extra={
                    "model": m.name,
                    "task": m.sidecar.task.value,
                    "provider": m.session.get_providers()[0],
                    "warmup_ms": round(m.warmup_ms, 1),
                },
            )
        for name, m in list(models.items()):
            try:
                models[name] = link_all(m, models, tasks)
            except ModelLoadError as exc:
                del models[name]
                _refuse(refused, m.sidecar_path, exc)
        defaults = _defaults(models, settings, tasks)
        release_free_heap()
        return cls(models, defaults, refused, tasks)

    @overload
    def get(self, task: TaskSpec[M, Any, Any], name: str | None) -> M: ...
    @overload
    def get(self, task: Task, name: str | None) -> LoadedModel: ...

    def get(self, task: TaskSpec[Any, Any, Any] | Task, name: str | None) -> LoadedModel:
        """The named model, as the task's model type (it must serve the task), or the task's default.  (By
        :class:`Task` too, for the bench scripts: then typed as a plain model.)"""
        spec = {s.name: s for s in self.tasks}[task] if isinstance(task, Task) else task
        if name is None:
            if spec.name not in self.defaults:
                raise ModelNotFound(f"no {spec.name} model is loaded", field="model")
            name = self.defaults[spec.name]
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r}; loaded: {sorted(self.models)}", field="model")
        served: LoadedModel | None = spec.view(model)
        if served is None:
            raise InvalidParameter(
                f"model {name!r} ({model.sidecar.task.value}) cannot serve {spec.route}", field="model"
            )
        return served

    def serves(self, model: LoadedModel) -> list[str]:
        """The routes ``model`` serves."""
        return [spec.route for spec in self.tasks if spec.view(model) is not None]


def _refuse(refused: dict[str, Refusal], path: Path, exc: ModelLoadError) -> None:
    refused[path.name] = Refusal(field=exc.field, reason=exc.reason)
    log.error(
        "model refused: %s: %s: %s",
        path.name,
        exc.field or "(sidecar)",
        exc.reason,
        extra={"file": str(path), "field": exc.field, "reason": exc.reason},
    )


def _defaults(models: dict[str, LoadedModel], settings: Settings, tasks: Tasks) -> dict[str, str]:
    """Each task's default model: the one its setting names (start-up fails when that one is not loaded or
    cannot serve it), else the first of its own task, else the first that serves it - a pose model's person
    finder (its ``person_model``) last, as it is a part of that model."""
    defaults: dict[str, str] = {}
    finders = {m.sidecar.person_model for m in models.values()}
    for spec in tasks:
        name = spec.default(settings)
        if name is not None:
            if name not in models or spec.view(models[name]) is None:
                why = "is not loaded" if name not in models else f"cannot serve {spec.route}"
                raise ModelLoadError(
                    settings.models_dir, spec.default_setting, f"default {spec.name} model {name!r} {why}"
                )
            defaults[spec.name] = name
            continue
        served = sorted((m for m in models.values() if spec.view(m) is not None), key=lambda m: m.name in finders)
        first = next((m for m in served if m.sidecar.task == spec.name), served[0] if served else None)
        if first is not None:
            defaults[spec.name] = first.name
    return defaults
