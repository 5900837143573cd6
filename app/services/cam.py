"""/cam: top-k classes (or one asked-for class) with their Class Activation Maps and boxes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.core.cam import CamNorm, CamRegion, Resampler, cam_scores, class_activation_maps, normalize_map, threshold_box
from app.core.imaging import DecodedImage
from app.core.overlay import blend_heatmap, display_image, draw_box, png_bytes
from app.model import Arrays, CamModel, LoadedModel
from app.schemas import CamClass, CamResponse, Timings
from app.services.common import (
    Deadline,
    Outcome,
    Stopwatch,
    b64,
    box_out,
    check_labels,
    class_fields,
    image_info,
    prepare,
    softmax,
    top_k,
)


@dataclass(frozen=True)
class CamParams:
    top_k: int = 5
    class_index: int | None = None
    threshold: float = 0.2
    norm: CamNorm = CamNorm.minmax
    region: CamRegion = CamRegion.peak
    include_grid: bool = False
    overlay: bool = False  # draw the PNG overlay
    embed: bool = False  # and put it, base64, in the JSON


def bind_cam(model: LoadedModel, warm: Arrays) -> CamModel:
    """Load-time check of a CAM-capable model on its warm-up outputs: the dense layer ``W``, ``b`` it exposes
    gives back its logits (``mean(W.V) + b``), and it has one label per class.  Keeps ``W`` and ``b``."""
    w, b = warm["cam_weight"].astype(np.float32), warm["cam_bias"].astype(np.float32)
    feats, logits = warm["features"][0], warm["logits"][0]
    if (
        w.ndim != 2
        or feats.ndim != 3
        or w.shape[1] != feats.shape[0]
        or b.shape != (w.shape[0],)
        or logits.shape != b.shape
    ):
        raise model.refusal(
            "outputs.cam_weight",
            f"shapes do not fit: features {feats.shape}, cam_weight {w.shape}, cam_bias {b.shape}, logits {logits.shape}",
        )
    err = float(np.max(np.abs(cam_scores(class_activation_maps(feats, w, np.arange(w.shape[0])), b) - logits)))
    if err > 1e-3 * max(1.0, float(np.max(np.abs(logits)))):
        raise model.refusal("outputs.cam_weight", f"CAM identity mean(W.V)+b = logits fails by {err:.3g}")
    check_labels(model, w.shape[0])
    return CamModel(**model.common_fields(), cam_weight=w, cam_bias=b)


def raster_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(h, w) of the raster the CAM is resampled onto: the image's shape, long side <= max_side."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def run_cam(
    model: CamModel, data: bytes, params: CamParams, settings: Settings, deadline: Deadline
) -> Outcome[CamResponse]:
    watch = Stopwatch()
    prep = prepare(data, model, settings, overlay=params.overlay)
    decode_ms = watch.lap()
    out = model.run(prep.batch, ["features", "logits"], deadline.left("inference"))
    inference_ms = watch.lap()

    feats, logits = out["features"][0], out["logits"][0]
    probs = softmax(logits)
    classes = [params.class_index] if params.class_index is not None else top_k(probs, params.top_k)
    maps = class_activation_maps(feats, model.cam_weight, classes)
    width, height = prep.decoded.width, prep.decoded.height
    out_h, out_w = raster_size(width, height, settings.cam_max_side)
    grid_h, grid_w = int(maps.shape[1]), int(maps.shape[2])
    resample = Resampler.at((grid_h, grid_w), *prep.fit.content_sample_positions(out_h, out_w, grid_h, grid_w))
    cell = np.array([width / out_w, height / out_h] * 2)

    results: list[CamClass] = []
    first_norm: npt.NDArray[np.float64] | None = None
    for idx, m in zip(classes, maps, strict=True):
        deadline.left("the class maps")
        norm = normalize_map(resample(m), params.norm)
        first_norm = norm if first_norm is None else first_norm
        xyxy = threshold_box(norm, params.threshold, params.region) * cell
        py, px = np.unravel_index(int(np.argmax(norm)), norm.shape)
        results.append(
            CamClass(
                **class_fields(model, idx, probs, logits),
                cam_score=float(m.mean() + model.cam_bias[idx]),
                box=box_out(xyxy, width, height),
                peak=(float((px + 0.5) * cell[0]), float((py + 0.5) * cell[1])),
                grid=m.astype(float).round(5).tolist() if params.include_grid else None,
            )
        )
    deadline.left("the overlay")
    png = (
        _overlay(prep.decoded, first_norm, results[0], settings) if params.overlay and first_norm is not None else None
    )
    timings = Timings(decode_ms=decode_ms, inference_ms=inference_ms, postprocess_ms=watch.lap())
    response = CamResponse(
        model=model.name,
        image=image_info(prep.decoded),
        threshold=params.threshold,
        normalization=params.norm.value,
        region=params.region.value,
        grid_size=(grid_h, grid_w),
        classes=results,
        overlay_png=b64(png) if png is not None and params.embed else None,
        timings=timings,
    )
    return Outcome(response, png, timings, prep.decoded.format)


def _overlay(decoded: DecodedImage, norm: npt.NDArray[np.float64], top: CamClass, settings: Settings) -> bytes:
    """Heatmap of the first class over the image, with its box and label."""
    canvas = blend_heatmap(display_image(decoded.image, settings.overlay_max_side), norm)
    s = canvas.width / decoded.width
    draw_box(
        canvas, [top.box.x1 * s, top.box.y1 * s, top.box.x2 * s, top.box.y2 * s], f"{top.name} {top.probability:.0%}"
    )
    return png_bytes(canvas)
