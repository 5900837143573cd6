"""/pose: 2k joint coordinates regressed for the person in a box (default: the whole image)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.config import Settings
from app.core.overlay import display_image, draw_skeleton, png_bytes
from app.model import Arrays, LoadedModel, PoseModel
from app.schemas import Edge, Joint, PoseResponse, Timings
from app.services.common import Deadline, Outcome, Region, Stopwatch, b64, box_out, image_info, output_width, prepare


@dataclass(frozen=True)
class PoseParams:
    box: Region | None = None  # xyxy in image pixels
    overlay: bool = False  # draw the PNG overlay
    embed: bool = False  # and put it, base64, in the JSON


def bind_pose(model: LoadedModel, warm: Arrays) -> PoseModel:
    """Load-time check: the sidecar names the joints and their edges, and the outputs give an x, y (and a
    visibility, if any) for each of them."""
    spec = model.sidecar.joints
    if spec is None:
        raise model.refusal("joints", "a pose model's sidecar must name its joints (names, edges)")
    k = len(spec.names)
    if (n := output_width(model, warm, "joints")) != 2 * k:
        raise model.refusal("joints.names", f"{k} joints named for {n} numbers of output 'joints' (x, y each)")
    visibility = "joint_visibility" in model.sidecar.outputs
    if visibility and (n := output_width(model, warm, "joint_visibility")) != k:
        raise model.refusal("outputs.joint_visibility", f"{n} visibilities for {k} joints")
    if any(not (0 <= a < k and 0 <= b < k) for a, b in spec.edges):
        raise model.refusal("joints.edges", f"an edge names a joint outside 0..{k - 1}")
    return PoseModel(**model.common_fields(), joints=spec, visibility=visibility)


def run_pose(
    model: PoseModel, data: bytes, params: PoseParams, settings: Settings, deadline: Deadline
) -> Outcome[PoseResponse]:
    spec = model.joints
    watch = Stopwatch()
    prep = prepare(data, model, settings, region=params.box, overlay=params.overlay)
    decode_ms = watch.lap()
    wanted = ["joints", "joint_visibility"] if model.visibility else ["joints"]
    out = model.run(prep.batch, wanted, deadline.left("inference"))
    inference_ms = watch.lap()

    k = len(spec.names)
    norm = np.asarray(out["joints"][0], dtype=np.float64).reshape(k, 2)
    points = prep.fit.region_points_to_image(norm)
    vis = out["joint_visibility"][0] if "joint_visibility" in out else None
    joints = [
        Joint(
            index=i,
            name=name,
            x=float(points[i, 0]),
            y=float(points[i, 1]),
            x_norm=float(norm[i, 0]),
            y_norm=float(norm[i, 1]),
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
