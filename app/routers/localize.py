"""POST /localize - one class and its regressed box."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import ImageUpload, InferenceDep
from app.routers.common import IMAGE_BODY_OPENAPI, PNG_RESPONSE, Format, ModelName, Overlay, answer
from app.schemas import LocalizeResponse, OutputFormat
from app.services.localize import LocalizeParams, run_localize
from app.sidecar import Task

router = APIRouter(tags=["localize"])


@router.post(
    "/localize",
    response_model=LocalizeResponse,
    responses=PNG_RESPONSE,
    openapi_extra=IMAGE_BODY_OPENAPI,
    summary="What is the main object and where is it? A class and a box",
)
async def localize(
    ctx: InferenceDep,  # first: readiness and a place before the body is read
    image: ImageUpload,
    model: ModelName = None,
    top_k: Annotated[int, Query(ge=1, le=20, description="How many alternative classes to return.")] = 5,
    overlay: Overlay = False,
    format: Format = OutputFormat.json,
) -> LocalizeResponse | Response:
    """Upload an image in the multipart field `image` (or send it as the raw body, `Content-Type: image/*`).  A multi-task network predicts the class and
    regresses the object's box; the box comes back in pixels of the full, EXIF-oriented image."""
    served = ctx.registry.get(Task.localize, model)
    params = LocalizeParams(
        top_k=top_k, overlay=overlay or format is OutputFormat.png, embed=overlay and format is OutputFormat.json
    )
    outcome = await ctx.run(served.name, lambda deadline: run_localize(served, image, params, ctx.settings, deadline))
    return answer(outcome, format)
