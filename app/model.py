"""What a loaded model is: its sidecar, its onnxruntime session, and, for the tasks that need them, the pieces
checked at load (:mod:`app.tasks`) - typed, so that no request has to check them again."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.core.cam_methods import CamMethod
from app.core.fitting import InputSpec
from app.errors import InvalidParameter, RequestTimeout
from app.runtime import WATCHDOG
from app.sidecar import JointsSpec, Sidecar

Arrays = dict[str, npt.NDArray[np.float32]]
F32 = npt.NDArray[np.float32]


class ModelLoadError(RuntimeError):
    """A model in models_dir cannot be served: ``field`` names what is wrong with it (a sidecar field such as
    ``joints`` or ``box_format``, ``outputs.box``, ``file``, ``sha256``); ``None`` when the sidecar is not JSON."""

    def __init__(self, path: Path, field: str | None, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}" if field else f"{path}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason


@dataclass
class LoadedModel:
    """One servable model: its sidecar, session and input geometry."""

    sidecar: Sidecar
    session: ort.InferenceSession
    path: Path  # the .onnx file
    spec: InputSpec
    sidecar_path: Path
    warmup_ms: float = 0.0
    label_index: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.sidecar.name

    def refusal(self, field: str, reason: str) -> ModelLoadError:
        """The load error refusing this model, naming its sidecar and ``field``."""
        return ModelLoadError(self.sidecar_path, field, reason)

    def run(self, batch: F32, outputs: Sequence[str], timeout_s: float | None = None) -> Arrays:
        """Run the session and return the requested contract outputs by contract name; a run longer than
        ``timeout_s`` is terminated (503)."""
        names = [self.sidecar.outputs[o] for o in outputs]
        values = run_watched(self.session, names, {self.sidecar.input.name: batch}, timeout_s)
        return dict(zip(outputs, values, strict=True))

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
        if key in self.label_index:
            return self.label_index[key]
        raise InvalidParameter(
            f"unknown label {label!r} for model {self.name}: give a dataset id (e.g. "
            f"{self.sidecar.labels[0].id!r}) or a class name (see GET /models/{self.name})",
            field="label",
        )

    @staticmethod
    def build_label_index(sidecar: Sidecar) -> dict[str, int]:
        index: dict[str, int] = {}
        for lab in sidecar.labels:
            aliases = str(getattr(lab, "aliases", "") or "")
            for k in (lab.id, lab.name, *aliases.split(",")):
                index.setdefault(k.strip().lower(), lab.index)
        return index

    def common_fields(self) -> dict[str, Any]:
        """The fields every model has, to build a task's model type (:class:`CamModel`...) from this one."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LoadedModel)}


def run_watched(
    session: ort.InferenceSession, names: Sequence[str], feed: dict[str, F32], timeout_s: float | None
) -> list[F32]:
    """``session.run``, terminated (503) when it runs longer than ``timeout_s``."""
    if timeout_s is None:
        return [np.asarray(v) for v in session.run(list(names), feed)]
    options = ort.RunOptions()
    ticket = WATCHDOG.watch(options, timeout_s)
    try:
        values = session.run(list(names), feed, options)
    except Exception as exc:
        if options.terminate:
            raise RequestTimeout("the request ran out of time in inference and was stopped; retry later") from exc
        raise
    finally:
        WATCHDOG.done(ticket)
    return [np.asarray(v) for v in values]


@dataclass
class CamHead:
    """A CAM model's head graph (``features -> logits``, and the gradient when it has one), checked at load."""

    session: ort.InferenceSession
    path: Path
    input: str
    output: str
    gradient: str | None  # (N, classes, K): sum_rc d logits / d features
    pooled: bool  # fed (N, K, 1, 1) pooled vectors, it gives the same as on the volume
    batch: int | None  # its fixed batch size, None when dynamic

    def run(self, features: F32, outputs: Sequence[str], timeout_s: float | None = None) -> list[F32]:
        return run_watched(self.session, outputs, {self.input: np.ascontiguousarray(features, np.float32)}, timeout_s)


@dataclass
class CamModel(LoadedModel):
    """A model that serves /cam: its dense layer ``W``, ``b`` (``mean(W.V) + b = logits`` held at load), or its
    head graph (``head(features) = logits`` held at load), or both; and the class-map methods it can serve."""

    cam_weight: F32 | None = field(kw_only=True, default=None)
    cam_bias: F32 | None = field(kw_only=True, default=None)
    head: CamHead | None = field(kw_only=True, default=None)
    methods: tuple[CamMethod, ...] = field(kw_only=True, default=(CamMethod.cam,))

    @property
    def default_method(self) -> CamMethod:
        return self.methods[0]

    def resolve_method(self, method: CamMethod | None) -> CamMethod:
        """``method``, or the model's default; 422 naming the ones it serves when it cannot serve ``method``."""
        if method is None:
            return self.default_method
        if method not in self.methods:
            why = "its head is not one dense layer" if method is CamMethod.cam else "it has no head gradient"
            raise InvalidParameter(
                f"model {self.name} cannot serve method={method.value} ({why}); it serves: "
                f"{', '.join(m.value for m in self.methods)}",
                field="method",
            )
        return method


@dataclass
class PoseModel(LoadedModel):
    """A model that serves /pose: its joints, whose count matched its outputs at load."""

    joints: JointsSpec = field(kw_only=True)
    visibility: bool = field(kw_only=True)  # whether it gives each joint's visibility
    person: LoadedModel | None = field(kw_only=True, default=None)  # its person finder (sidecar ``person_model``)
