"""POST /cam - Class Activation Maps and the boxes they imply."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.core.cam import CamNorm, CamRegion, CamTta
from app.core.cam_methods import CamMethod
from app.deps import ImageUpload, InferenceDep
from app.errors import InvalidParameter
from app.model import CamModel
from app.routers.common import IMAGE_BODY_OPENAPI, PNG_RESPONSE, Format, ModelName, Overlay, draws, serve
from app.schemas import CamResponse, OutputFormat
from app.services.cam import SCORE_CAM_MASKS, CamParams
from app.tasks import CAM

router = APIRouter(tags=[CAM.name])


@router.post(
    CAM.route,
    response_model=CamResponse,
    responses=PNG_RESPONSE,
    openapi_extra=IMAGE_BODY_OPENAPI,
    summary="Where is each top class (or the class you name)? CAM heatmaps and boxes",
)
async def cam(
    ctx: InferenceDep,  # first: readiness and a place before the body is read
    image: ImageUpload,
    model: ModelName = None,
    top_k: Annotated[
        int, Query(ge=1, le=20, description="How many top classes to localize (each costs a CAM and its box).")
    ] = 1,
    class_id: Annotated[int | None, Query(ge=0, description="Localize this class index instead of the top-k.")] = None,
    label: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Localize this class, by dataset id (n02085620) or name (Chihuahua).",
        ),
    ] = None,
    threshold: Annotated[
        float, Query(ge=0.0, le=1.0, description="Fraction of the normalized CAM a pixel must reach to be in the box.")
    ] = 0.2,
    norm: Annotated[
        CamNorm, Query(description="`minmax`: (M-min)/(max-min); `max`: M/max with negatives at 0.")
    ] = CamNorm.minmax,
    region: Annotated[
        CamRegion, Query(description="`peak`: region holding the maximum; `largest`: biggest region; `all`.")
    ] = CamRegion.peak,
    include_grid: Annotated[bool, Query(description="Return each raw CAM M_y on its feature grid.")] = False,
    method: Annotated[
        CamMethod | None,
        Query(
            description="How the maps are computed: `cam` (a head that is one dense layer), `gradcam` (d logit / d "
            "pooled as channel weights), `ablationcam` and `reciprocam` (forward passes of the head on ablated or "
            "masked features), `scorecam` (masked images through the whole network, up to `max_masks`), `eigencam` "
            "(first principal component of the features, class-agnostic).  Default: the model's first in GET "
            "/models `cam_methods`; one it cannot serve: 422 naming those it can."
        ),
    ] = None,
    max_masks: Annotated[
        int, Query(ge=1, le=1024, description="scorecam: at most this many masked images (also bounded in time).")
    ] = SCORE_CAM_MASKS,
    tta: Annotated[
        CamTta,
        Query(
            description="Test-time augmentation: `flip` runs the image and its mirror and averages their feature "
            "volumes (mirrored back) and logits before the maps; about twice the inference time."
        ),
    ] = CamTta.none,
    overlay: Overlay = False,
    format: Format = OutputFormat.json,
) -> CamResponse | Response:
    """Upload an image in the multipart field `image` (or send it as the raw body, `Content-Type: image/*`).  For each of the `top_k` classes (or the one
    given by `class_id` / `label`), the map (by default the CAM ``M_y = sum_k W[y,k] V[k]``; see `method`) is resampled bilinearly onto the
    image, normalized to [0, 1] and thresholded; the box encloses the chosen connected region.
    Boxes are in pixels of the full, EXIF-oriented image."""
    if class_id is not None and label is not None:
        raise InvalidParameter("give class_id or label, not both", field="label")
    draw, embed = draws(overlay, format)

    def params(served: CamModel) -> CamParams:
        return CamParams(
            top_k=top_k,
            class_index=served.resolve_class(class_id, label),
            threshold=threshold,
            norm=norm,
            region=region,
            include_grid=include_grid,
            overlay=draw,
            embed=embed,
            method=served.resolve_method(method),
            max_masks=max_masks,
            tta=tta,
        )

    return await serve(ctx, CAM, model, image, params, format)
