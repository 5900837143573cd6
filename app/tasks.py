"""The one table of tasks: per endpoint, the models it serves, what it checks of them at load, its default
model, and its job.  The registry, ``GET /models``, the defaults, the app's routers and the inference routes
all go through it; a new task is a row here, its job (``app/services/<task>.py``), its route
(``app/routers/<task>.py``) and its response schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.config import Settings
from app.model import Arrays, CamModel, LoadedModel, PoseModel
from app.schemas import CamResponse, LocalizeResponse, PoseResponse
from app.services.cam import CamParams, bind_cam, run_cam
from app.services.common import Deadline, Outcome
from app.services.localize import LocalizeParams, bind_localize, run_localize
from app.services.pose import PoseParams, bind_pose, link_pose, run_pose
from app.sidecar import Sidecar, Task

M = TypeVar("M", bound=LoadedModel)
P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskSpec(Generic[M, P, R]):
    """One task.  ``bind`` is its load-time check, on the sidecar and the outputs of the warm-up run: it raises
    :class:`ModelLoadError` naming the field at fault, or gives the model as ``model_type`` - the typed pieces
    that ``run`` relies on (e.g. a pose model's joints), so that no request checks them again."""

    name: str  # its route is /<name>
    router: str  # the module whose ``router`` holds its route (its typed query parameters)
    default_setting: str | None  # the Settings field naming its default model (LOCSVC_DEFAULT_<TASK>_MODEL)
    model_type: type[M]
    needs: frozenset[str]  # the contract outputs it reads
    serves: Callable[[Sidecar], bool]
    bind: Callable[[LoadedModel, Arrays], M]
    run: Callable[[M, bytes, P, Settings, Deadline], Outcome[R]]
    # once every model is loaded: the model given the other models its sidecar names (e.g. a pose model's
    # person finder), or refused (:class:`ModelLoadError`) when one is missing or unfit
    link: Callable[[M, Mapping[str, LoadedModel]], M] | None = None

    def __post_init__(self) -> None:
        if self.default_setting is not None and self.default_setting not in Settings.model_fields:
            raise TypeError(f"task {self.name}: default_setting {self.default_setting!r} is not a Settings field")

    @property
    def route(self) -> str:
        return f"/{self.name}"

    def default(self, settings: Settings) -> str | None:
        """The model named by ``default_setting``, if any (else the registry takes the first that serves it)."""
        name: str | None = getattr(settings, self.default_setting) if self.default_setting else None
        return name

    def check(self, model: LoadedModel, warm: Arrays) -> M:
        """The outputs it needs are in the sidecar, then its own checks (:attr:`bind`)."""
        missing = self.needs - model.sidecar.outputs.keys()
        if missing:
            raise model.refusal("outputs", f"{self.route} needs the outputs {sorted(missing)}")
        return self.bind(model, warm)

    def view(self, model: LoadedModel) -> M | None:
        """``model`` as this task's model type, when it serves this task (every loaded model was bound, at load,
        to each task that serves it)."""
        return model if self.serves(model.sidecar) and isinstance(model, self.model_type) else None


def _task_is(task: Task) -> Callable[[Sidecar], bool]:
    return lambda sidecar: sidecar.task is task


CAM: TaskSpec[CamModel, CamParams, CamResponse] = TaskSpec(
    name="cam",
    router="app.routers.cam",
    default_setting="default_cam_model",
    model_type=CamModel,
    needs=frozenset({"features", "logits"}),  # and cam_weight + cam_bias, or a head file (bind_cam)
    serves=lambda s: s.task is Task.cam or s.has_cam,  # any CAM-capable model serves /cam
    bind=bind_cam,  # mean(W.V) + b = logits and/or head(features) = logits, one label per class; its methods
    run=run_cam,
)
LOCALIZE: TaskSpec[LoadedModel, LocalizeParams, LocalizeResponse] = TaskSpec(
    name="localize",
    router="app.routers.localize",
    default_setting="default_localize_model",
    model_type=LoadedModel,
    needs=frozenset({"logits", "box"}),
    serves=_task_is(Task.localize),
    bind=bind_localize,  # a box of 4 numbers, one label per class (box_format: a Literal of the sidecar schema)
    run=run_localize,
)
POSE: TaskSpec[PoseModel, PoseParams, PoseResponse] = TaskSpec(
    name="pose",
    router="app.routers.pose",
    default_setting="default_pose_model",
    model_type=PoseModel,
    needs=frozenset({"joints"}),
    serves=_task_is(Task.pose),
    bind=bind_pose,  # the sidecar's joints, 2 numbers of output per joint (and a visibility, if any); keeps them
    run=run_pose,
    link=link_pose,  # its person_model: a loaded one-class localize model
)

Tasks = Sequence[TaskSpec[Any, Any, Any]]
TASKS: Tasks = (CAM, LOCALIZE, POSE)


def bind_all(model: LoadedModel, warm: Arrays, tasks: Tasks = TASKS) -> LoadedModel:
    """``model`` checked for, and bound to, every task that serves its sidecar; refused (:class:`ModelLoadError`)
    when one fails, when none serves it, or when two need model types that one model cannot be."""
    specs = [spec for spec in tasks if spec.serves(model.sidecar)]
    if not specs:
        raise model.refusal("task", f"no endpoint serves a {model.sidecar.task.value} model with these outputs")
    bound = model
    for spec in specs:
        bound = spec.check(bound, warm)
    if any(spec.view(bound) is None for spec in specs):
        raise model.refusal("task", f"cannot serve {', '.join(s.route for s in specs)} at once")
    return bound


def link_all(model: LoadedModel, models: Mapping[str, LoadedModel], tasks: Tasks = TASKS) -> LoadedModel:
    """``model`` given, by each task that serves it and has a :attr:`TaskSpec.link`, the models it names."""
    for spec in tasks:
        if spec.link is not None and (view := spec.view(model)) is not None:
            model = spec.link(view, models)
    return model
