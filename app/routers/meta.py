"""Health, readiness, model listing and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import MetricsDep, RegistryDep
from app.errors import ModelNotFound, NotReady
from app.model import LoadedModel
from app.problems import PROBLEM_RESPONSES
from app.registry import Registry
from app.schemas import Health, ModelSummary, Ready
from app.sidecar import Sidecar
from app.tasks import CAM

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: PROBLEM_RESPONSES[503]},
    summary="Readiness: models loaded and warmed up",
)
async def readyz(request: Request) -> Ready:
    registry = getattr(request.app.state, "registry", None)
    if registry is None or getattr(request.app.state, "shutting_down", False):
        retry = {"Retry-After": str(request.app.state.settings.retry_after_s)}
        raise NotReady("models are not loaded yet" if registry is None else "shutting down", headers=retry)
    return Ready(
        status="ready",
        models={m.name: round(m.warmup_ms, 2) for m in registry.models.values()},
        refused=registry.refused,
    )


def _summary(m: LoadedModel, registry: Registry) -> ModelSummary:
    s = m.sidecar
    serves = registry.serves(m)
    cam = CAM.view(m)
    return ModelSummary(
        name=s.name,
        task=s.task.value,
        file=s.file,
        sha256=s.sha256,
        input=s.input.model_dump(),
        normalization=s.normalization.model_dump(),
        outputs=s.outputs,
        num_labels=len(s.labels),
        serves=serves,
        cam_methods=[method.value for method in cam.methods] if cam is not None else [],
        person_model=s.person_model,
        metrics=s.metrics,
        provenance=s.provenance,
    )


protected = APIRouter(tags=["service"])  # create_app adds the API-key dependency when configured


REFUSED_HEADER = "X-Models-Refused"
_REFUSED_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            REFUSED_HEADER: {
                "description": "Sidecar files in models_dir refused at load, comma-separated (GET /readyz says why); "
                "absent when none was.",
                "schema": {"type": "string"},
            }
        }
    }
}


@protected.get(
    "/models",
    response_model=list[ModelSummary],
    responses=_REFUSED_DOC,
    summary="Loaded models with their sidecar metadata",
)
def list_models(registry: RegistryDep, response: Response) -> list[ModelSummary]:
    if registry.refused:
        response.headers[REFUSED_HEADER] = ", ".join(sorted(registry.refused))
    return [_summary(m, registry) for m in registry.models.values()]


@protected.get(
    "/models/{name}",
    response_model=Sidecar,
    responses={404: PROBLEM_RESPONSES[404]},
    summary="One model's full sidecar (labels included)",
)
def get_model(name: str, registry: RegistryDep) -> Sidecar:
    if name not in registry.models:
        raise ModelNotFound(f"no model named {name!r}; loaded: {sorted(registry.models)}", field="name")
    return registry.models[name].sidecar


@protected.get(
    "/metrics", summary="Prometheus metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}
)
def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
