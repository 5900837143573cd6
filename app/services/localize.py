"""/localize: one class and one regressed box from a multi-task (classification + box) model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.core.boxes import rchw_to_xyxy
from app.core.fitting import Fit
from app.core.overlay import display_image, draw_box, png_bytes
from app.model import Arrays, LoadedModel
from app.schemas import LocalizeResponse, Timings
from app.services.common import (
    Deadline,
    Outcome,
    Stopwatch,
    b64,
    box_out,
    check_labels,
    class_prediction,
    image_info,
    output_width,
    prepare,
    softmax,
    top_k,
)
from app.sidecar import BoxFormat


@dataclass(frozen=True)
class LocalizeParams:
    top_k: int = 5
    overlay: bool = False  # draw the PNG overlay
    embed: bool = False  # and put it, base64, in the JSON


def bind_localize(model: LoadedModel, warm: Arrays) -> LoadedModel:
    """Load-time check on the warm-up outputs: one box of 4 numbers, one label per logit."""
    if (n := output_width(model, warm, "box")) != 4:
        raise model.refusal("outputs.box", f"gives {n} numbers per image, a box needs 4")
    check_labels(model, output_width(model, warm, "logits"))
    return model


def model_box_to_input_xyxy(
    box: npt.ArrayLike, box_format: BoxFormat, input_w: int, input_h: int
) -> npt.NDArray[np.float64]:
    """The model's box output ``(4,)`` (fractions of its input) -> xyxy in model-input pixels."""
    xyxy = rchw_to_xyxy(box) if box_format == "rchw_norm" else np.asarray(box, dtype=np.float64)
    return np.asarray(xyxy * np.array([input_w, input_h, input_w, input_h], dtype=np.float64))


def box_in_image(model: LoadedModel, box: npt.ArrayLike, fit: Fit) -> npt.NDArray[np.float64]:
    """A localize model's box output ``(4,)`` for the input ``fit`` made -> xyxy in image pixels (unclipped)."""
    spec = model.spec
    xyxy_in = model_box_to_input_xyxy(box, model.sidecar.box_format or "rchw_norm", spec.width, spec.height)
    return fit.input_boxes_to_image(xyxy_in)


def run_localize(
    model: LoadedModel, data: bytes, params: LocalizeParams, settings: Settings, deadline: Deadline
) -> Outcome[LocalizeResponse]:
    watch = Stopwatch()
    prep = prepare(data, model, settings, overlay=params.overlay, deadline=deadline)
    decode_ms = watch.lap()
    out = model.run(prep.batch, ["logits", "box"], deadline.left("inference"))
    inference_ms = watch.lap()

    logits = out["logits"][0]
    probs = softmax(logits)
    preds = [class_prediction(model, i, probs, logits) for i in top_k(probs, params.top_k)]
    width, height = prep.decoded.width, prep.decoded.height
    box = box_out(box_in_image(model, out["box"][0], prep.fit), width, height)
    png = None
    if params.overlay:
        deadline.left("the overlay")
        canvas = display_image(prep.decoded.image, settings.overlay_max_side)
        s = canvas.width / width
        draw_box(
            canvas, [box.x1 * s, box.y1 * s, box.x2 * s, box.y2 * s], f"{preds[0].name} {preds[0].probability:.0%}"
        )
        png = png_bytes(canvas)
    timings = Timings(decode_ms=decode_ms, inference_ms=inference_ms, postprocess_ms=watch.lap())
    response = LocalizeResponse(
        model=model.name,
        image=image_info(prep.decoded),
        label=preds[0],
        box=box,
        top_k=preds,
        overlay_png=b64(png) if png is not None and params.embed else None,
        timings=timings,
    )
    return Outcome(response, png, timings, prep.decoded.format)
