"""POST /localize - one class and its regressed box."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import ImageUpload, InferenceDep
from app.routers.common import IMAGE_BODY_OPENAPI, PNG_RESPONSE, Format, ModelName, Overlay, draws, serve
from app.schemas import LocalizeResponse, OutputFormat
from app.services.localize import LocalizeParams
from app.tasks import LOCALIZE

router = APIRouter(tags=[LOCALIZE.name])


@router.post(
    LOCALIZE.route,
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
    draw, embed = draws(overlay, format)
    return await serve(
        ctx, LOCALIZE, model, image, lambda _: LocalizeParams(top_k=top_k, overlay=draw, embed=embed), format
    )
