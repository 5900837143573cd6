"""A throwaway task, /classify, added without touching app/: what a new task is - its response schema, its
job (``bind``: the load-time check, ``run``), its row (a :class:`TaskSpec`) and its route."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from app.config import Settings
from app.deps import ImageUpload, InferenceDep
from app.model import Arrays, LoadedModel
from app.routers.common import IMAGE_BODY_OPENAPI, Format, ModelName, serve
from app.schemas import ClassPrediction, OutputFormat, Timings
from app.services.common import (
    Deadline,
    Outcome,
    Stopwatch,
    check_labels,
    class_prediction,
    output_width,
    prepare,
    softmax,
)
from app.tasks import TaskSpec


class ClassifyResponse(BaseModel):  # its schema
    model: str
    label: ClassPrediction
    timings: Timings


@dataclass(frozen=True)
class ClassifyParams:
    pass


def bind_classify(model: LoadedModel, warm: Arrays) -> LoadedModel:
    check_labels(model, output_width(model, warm, "logits"))
    return model


def run_classify(
    model: LoadedModel, data: bytes, params: ClassifyParams, settings: Settings, deadline: Deadline
) -> Outcome[ClassifyResponse]:
    watch = Stopwatch()
    prep = prepare(data, model, settings)
    decode_ms = watch.lap()
    logits = model.run(prep.batch, ["logits"], deadline.left("inference"))["logits"][0]
    inference_ms = watch.lap()
    probs = softmax(logits)
    label = class_prediction(model, int(probs.argmax()), probs, logits)
    timings = Timings(decode_ms=decode_ms, inference_ms=inference_ms, postprocess_ms=watch.lap())
    return Outcome(ClassifyResponse(model=model.name, label=label, timings=timings), None, timings, prep.decoded.format)


CLASSIFY: TaskSpec[LoadedModel, ClassifyParams, ClassifyResponse] = TaskSpec(  # its row
    name="classify",
    router=__name__,
    default_setting=None,  # no LOCSVC_ setting: the first classifier loaded
    model_type=LoadedModel,
    needs=frozenset({"logits"}),
    serves=lambda s: bool(s.labels) and "logits" in s.outputs,  # any classifier, whatever its sidecar's task
    bind=bind_classify,
    run=run_classify,
)

router = APIRouter(tags=["classify"])  # its route


@router.post(CLASSIFY.route, response_model=ClassifyResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def classify(
    ctx: InferenceDep, image: ImageUpload, model: ModelName = None, format: Format = OutputFormat.json
) -> ClassifyResponse | Response:
    return await serve(ctx, CLASSIFY, model, image, lambda _: ClassifyParams(), format)
