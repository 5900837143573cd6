"""POST /pose - body joints of the person in a box."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.core.boxes import rchw_to_xyxy
from app.deps import ImageUpload, InferenceDep
from app.errors import InvalidParameter
from app.routers.common import IMAGE_BODY_OPENAPI, PNG_RESPONSE, Format, ModelName, Overlay, draws, serve
from app.schemas import OutputFormat, PoseResponse
from app.services.common import Region
from app.services.pose import PoseParams
from app.tasks import POSE

router = APIRouter(tags=[POSE.name])


class BoxFormat(StrEnum):
    xyxy = "xyxy"
    rchw = "rchw"


def parse_box(text: str | None, fmt: BoxFormat) -> Region | None:
    """``"a,b,c,d"`` in the given format -> xyxy; 422 naming ``box`` when malformed."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidParameter(f"box must be 4 comma-separated numbers, got {text!r}", field="box") from exc
    if len(values) != 4:
        raise InvalidParameter(f"box must be 4 comma-separated numbers, got {len(values)}", field="box")
    xyxy = rchw_to_xyxy(values) if fmt is BoxFormat.rchw else values
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return (x1, y1, x2, y2)


@router.post(
    POSE.route,
    response_model=PoseResponse,
    responses=PNG_RESPONSE,
    openapi_extra=IMAGE_BODY_OPENAPI,
    summary="Where are the person's joints? 14 LSP joints, the skeleton and the person's box",
)
async def pose(
    ctx: InferenceDep,  # first: readiness and a place before the body is read
    image: ImageUpload,
    model: ModelName = None,
    box: Annotated[
        str | None,
        Query(
            description="The person's box in image pixels, 4 comma-separated numbers (see box_format). "
            "Default: the box the pose model's person finder draws (its sidecar's person_model), or the whole "
            "image for a model without one; then, for a model whose sidecar gives its framing, the box its "
            "first answer's joints frame, where it regresses them again.",
            examples=["40,10,260,400"],
        ),
    ] = None,
    box_format: Annotated[
        BoxFormat, Query(description="`xyxy`: x1,y1,x2,y2; `rchw`: row,col,height,width.")
    ] = BoxFormat.xyxy,
    overlay: Overlay = False,
    format: Format = OutputFormat.json,
) -> PoseResponse | Response:
    """Upload an image in the multipart field `image` (or send it as the raw body, `Content-Type: image/*`).  The person box is cropped, fitted to the model,
    and the network regresses 2k numbers: each joint's x, y as fractions of the box, mapped back to
    image pixels."""
    draw, embed = draws(overlay, format)
    return await serve(
        ctx, POSE, model, image, lambda _: PoseParams(box=parse_box(box, box_format), overlay=draw, embed=embed), format
    )
