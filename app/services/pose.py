"""/pose: 2k joint coordinates regressed for the person in a box: the request's, else the one the pose model's
person finder draws (its sidecar's ``person_model``), else the whole image; without the request's box, regressed
again in the box those joints frame (its sidecar's ``joints.framing``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.config import Settings
from app.core.boxes import FloatArray, clip_xyxy, joints_frame
from app.core.imaging import DecodedImage
from app.core.overlay import display_image, draw_box, draw_skeleton, png_bytes
from app.errors import PayloadTooLarge
from app.model import Arrays, LoadedModel, PoseModel
from app.schemas import Edge, Joint, PoseResponse, Timings
from app.services.common import (
    Deadline,
    Outcome,
    Prepared,
    Region,
    Stopwatch,
    b64,
    box_out,
    decode_for,
    fit_region,
    image_info,
    output_width,
)
from app.services.localize import box_in_image
from app.sidecar import Framing, Task

# Without a box, the image is decoded first for the finder's look at the whole image; then again, at a finer
# scale, when the box it finds holds less than PERSON_MIN_INPUT of the pose model's input side along either axis:
# mean PCP on the held-out scenes is flat above about 0.6 of it and falls below (bench.pose_resolution).
PERSON_MIN_INPUT = 0.6
# The finder looks PERSON_LOOKS times: first at the whole image, then at a region PERSON_REFINE times its last
# box's sides, about the same centre, where the person fills more of its input.
PERSON_LOOKS = 2
PERSON_REFINE = 1.5


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


def link_pose(model: PoseModel, models: Mapping[str, LoadedModel]) -> PoseModel:
    """The sidecar's ``person_model``, when it names one: a loaded localize model with one class."""
    name = model.sidecar.person_model
    if name is None:
        return model
    person = models.get(name)
    if person is None:
        raise model.refusal("person_model", f"{name!r} is not loaded (it must be in models_dir and LOCSVC_MODELS)")
    if person.sidecar.task is not Task.localize or len(person.sidecar.labels) != 1:
        raise model.refusal("person_model", f"{name!r} must be a localize model with one class")
    return dataclasses.replace(model, person=person)


def person_region(
    finder: LoadedModel,
    decoded: DecodedImage,
    deadline: Deadline,
    *,
    after: Region | None = None,
    looks: int | None = None,
) -> Region | None:
    """The box the person finder draws, xyxy image pixels (``None`` if degenerate): ``looks`` times (default
    :data:`PERSON_LOOKS`), first on the whole image - or, ``after`` a box, on a region around it - then each
    time again on a region around its last box (:data:`PERSON_REFINE`), where the person is larger in its
    input: a cascade of the same model."""
    w, h = decoded.width, decoded.height
    box = after  # the last look's box
    for _ in range(PERSON_LOOKS if looks is None else looks):
        region = None if box is None else _around(box, PERSON_REFINE, w, h)
        found = fit_region(decoded, finder, region)
        out = finder.run(found.batch, ["box"], deadline.left("the person finder"))
        x1, y1, x2, y2 = (float(v) for v in clip_xyxy(box_in_image(finder, out["box"][0], found.fit), w, h))
        if x2 - x1 < 1 or y2 - y1 < 1:
            return box  # degenerate: the previous look's box, if any
        box = (x1, y1, x2, y2)
    return box


def _around(box: Region, times: float, width: int, height: int) -> Region:
    """``box`` grown ``times`` its sides about its centre, clipped to the image."""
    x1, y1, x2, y2 = box
    cx, cy, g = (x1 + x2) / 2, (y1 + y2) / 2, times / 2
    grown = clip_xyxy([cx - g * (x2 - x1), cy - g * (y2 - y1), cx + g * (x2 - x1), cy + g * (y2 - y1)], width, height)
    return (float(grown[0]), float(grown[1]), float(grown[2]), float(grown[3]))


def sharp_enough(
    decoded: DecodedImage,
    data: bytes,
    model: PoseModel,
    box: Region,
    settings: Settings,
    overlay: bool,
    deadline: Deadline,
) -> DecodedImage:
    """``decoded``, or the upload decoded again at the scale that gives ``box`` :data:`PERSON_MIN_INPUT` of the
    pose model's input side when ``decoded`` holds less of it (a reduced decode of a large image with a small
    person) - unless that decode would take more than ``max_decode_bytes`` beside ``decoded``: the upload was
    accepted, and its person is then regressed on ``decoded``."""
    x1, y1, x2, y2 = box
    if decoded.resolution >= min(1.0, PERSON_MIN_INPUT * model.spec.needed_fraction(x2 - x1, y2 - y1)):
        return decoded
    deadline.left("decoding at a finer scale")
    try:
        return decode_for(data, model, settings, box, overlay=overlay, pixels=PERSON_MIN_INPUT, deadline=deadline)
    except PayloadTooLarge:
        return decoded


def reframed(points: FloatArray, framing: Framing, width: int, height: int) -> Region | None:
    """The box the pose model was trained to see this person in, around its joints ``points`` (k, 2) image
    pixels, clipped to the image (``None`` if under a pixel there)."""
    x1, y1, x2, y2 = (
        float(v) for v in clip_xyxy(joints_frame(points, framing.span, framing.min_side_ratio), width, height)
    )
    return (x1, y1, x2, y2) if x2 - x1 >= 1 and y2 - y1 >= 1 else None


def run_pose(
    model: PoseModel, data: bytes, params: PoseParams, settings: Settings, deadline: Deadline
) -> Outcome[PoseResponse]:
    spec = model.joints
    watch = Stopwatch()
    finder = model.person if params.box is None else None
    decoded = decode_for(data, finder or model, settings, params.box, overlay=params.overlay, deadline=deadline)
    decode_ms, inference_ms = watch.lap(), 0.0
    region = params.box
    source: Literal["request", "person_model", "image"] = "request" if params.box is not None else "image"
    if finder is not None and (first := person_region(finder, decoded, deadline, looks=1)) is not None:
        inference_ms += watch.lap()
        decoded = sharp_enough(decoded, data, model, first, settings, params.overlay, deadline)
        decode_ms += watch.lap()
        region, source = person_region(finder, decoded, deadline, after=first, looks=PERSON_LOOKS - 1), "person_model"
    wanted = ["joints", "joint_visibility"] if model.visibility else ["joints"]
    k = len(spec.names)

    def regress(box: Region | None) -> tuple[Prepared, Arrays, FloatArray, FloatArray]:
        prep = fit_region(decoded, model, box)
        out = model.run(prep.batch, wanted, deadline.left("inference"))
        norm = np.asarray(out["joints"][0], dtype=np.float64).reshape(k, 2)
        return prep, out, norm, prep.fit.region_points_to_image(norm)

    prep, out, norm, points = regress(region)
    # Without the request's box, a second look of the pose model: in the box it was trained to see this person in
    framing = spec.framing if params.box is None else None
    if framing is not None and (frame := reframed(points, framing, decoded.width, decoded.height)) is not None:
        prep, out, norm, points = regress(frame)
    inference_ms += watch.lap()

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
        if source == "person_model":
            draw_box(canvas, [person.x1 * s, person.y1 * s, person.x2 * s, person.y2 * s], "person")
        draw_skeleton(canvas, points * s, spec.edges, spec.names)
        png = png_bytes(canvas)
    timings = Timings(decode_ms=decode_ms, inference_ms=inference_ms, postprocess_ms=watch.lap())
    response = PoseResponse(
        model=model.name,
        image=image_info(prep.decoded),
        person_box=person,
        person_box_source=source,
        joints=joints,
        edges=edges,
        overlay_png=b64(png) if png is not None and params.embed else None,
        timings=timings,
    )
    return Outcome(response, png, timings, prep.decoded.format)
