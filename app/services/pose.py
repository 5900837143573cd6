"""/pose: 2k joint coordinates regressed for the person in a box (default: the whole image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.core.overlay import display_image, draw_skeleton, png_bytes
from app.registry import LoadedModel
from app.schemas import Edge, Joint, PoseResponse, Timings
from app.services.common import Deadline, Outcome, Region, Stopwatch, b64, box_out, image_info, prepare


@dataclass(frozen=True)
class PoseParams:
    box: Region | None = None  # xyxy in image pixels
    overlay: bool = False  # draw the PNG overlay
    embed: bool = False  # and put it, base64, in the JSON


def run_pose(model: LoadedModel, data: bytes, params: PoseParams, settings: Settings, deadline: Deadline) -> Outcome[PoseResponse]:
    spec = model.sidecar.joints
    assert spec is not None  # registry only serves pose models with a joints spec
    watch = Stopwatch()
    prep = prepare(data, model, settings, region=params.box, overlay=params.overlay)
    decode_ms = watch.lap()
    wanted = ["joints"] + (["joint_visibility"] if "joint_visibility" in model.sidecar.outputs else [])
    out = model.run(prep.batch, wanted, deadline.left("inference"))
    inference_ms = watch.lap()

    k = len(spec.names)
    norm = np.asarray(out["joints"][0], dtype=np.float64).reshape(k, 2)
    points = prep.fit.region_points_to_image(norm)
    vis = out["joint_visibility"][0] if "joint_visibility" in out else None
    joints = [
        Joint(
            index=i, name=name, x=float(points[i, 0]), y=float(points[i, 1]),
            x_norm=float(norm[i, 0]), y_norm=float(norm[i, 1]),
            visibility=float(vis[i]) if vis is not None else None,
        )
        for i, name in enumerate(spec.names)
    ]
    edges = [Edge(a=a, b=b, names=(spec.names[a], spec.names[b])) for a, b in spec.edges]
    width, height = prep.decoded.width, prep.decoded.height
    person = box_out(prep.fit.region, width, height)
    png = None
    if params.overlay:
        deadline.left("the overlay")
        canvas = display_image(prep.decoded.image, settings.overlay_max_side)
        s = canvas.width / width
        draw_skeleton(canvas, points * s, spec.edges, spec.names)
        png = png_bytes(canvas)
    timings = Timings(decode_ms=decode_ms, inference_ms=inference_ms, postprocess_ms=watch.lap())
    response = PoseResponse(
        model=model.name,
        image=image_info(prep.decoded),
        person_box=person,
        joints=joints,
        edges=edges,
        overlay_png=b64(png) if png is not None and params.embed else None,
        timings=timings,
    )
    return Outcome(response, png, timings, prep.decoded.format)
