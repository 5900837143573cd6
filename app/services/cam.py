"""/cam: top-k classes (or one asked-for class) with their Class Activation Maps and boxes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.config import Settings
from app.core.cam import (
    CamNorm,
    CamRegion,
    CamTta,
    Resampler,
    bilinear_weights,
    cam_scores,
    class_activation_maps,
    flip_average,
    normalize_map,
    threshold_box,
)
from app.core.cam_methods import (
    CamMethod,
    ablated_pooled,
    ablated_volumes,
    ablation_weights,
    channel_order,
    eigencam_map,
    recipro_maps,
    recipro_pooled,
    recipro_volumes,
    score_masks,
    score_weights,
    weighted_maps,
)
from app.core.imaging import DecodedImage
from app.core.overlay import blend_heatmap, display_image, draw_box, png_bytes
from app.model import F32, Arrays, CamHead, CamModel, LoadedModel
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

SCORE_CAM_MASKS = 64  # default max_masks: masked images per Score-CAM request
SCORE_CAM_BATCH = 16  # masked images per run of the whole network
SCORE_CAM_SHARE = 0.5  # of the time left after inference that Score-CAM may use (the rest: maps, boxes, overlay)
HEAD_BATCH = 64  # volumes per run of a head that needs the whole volume (not pooled_head)


@dataclass(frozen=True)
class CamParams:
    top_k: int = 1
    class_index: int | None = None
    threshold: float = 0.2
    norm: CamNorm = CamNorm.minmax
    region: CamRegion = CamRegion.peak
    include_grid: bool = False
    overlay: bool = False  # draw the PNG overlay
    embed: bool = False  # and put it, base64, in the JSON
    method: CamMethod = CamMethod.cam
    max_masks: int = SCORE_CAM_MASKS
    tta: CamTta = CamTta.none


def bind_cam(model: LoadedModel, warm: Arrays) -> CamModel:
    """Load-time check of a CAM-capable model on its warm-up outputs: the dense layer ``W``, ``b`` it exposes
    gives back its logits (``mean(W.V) + b``), and/or its head file (sidecar ``head``: sha256, names, and
    ``head(features) = logits``) does; one label per class.  Keeps ``W``, ``b``, the head, and the methods."""
    feats, logits = warm["features"][0], warm["logits"][0]
    if feats.ndim != 3 or logits.ndim != 1:
        raise model.refusal(
            "outputs.features", f"features {feats.shape} and logits {logits.shape}: want (K, R, C), (Y,)"
        )
    dense = {"cam_weight", "cam_bias"} & model.sidecar.outputs.keys()
    w = b = None
    if dense == {"cam_weight", "cam_bias"}:
        w, b = warm["cam_weight"].astype(np.float32), warm["cam_bias"].astype(np.float32)
        if w.ndim != 2 or w.shape[1] != feats.shape[0] or b.shape != (w.shape[0],) or logits.shape != b.shape:
            raise model.refusal(
                "outputs.cam_weight",
                f"shapes do not fit: features {feats.shape}, cam_weight {w.shape}, cam_bias {b.shape}, logits {logits.shape}",
            )
        err = float(np.max(np.abs(cam_scores(class_activation_maps(feats, w, np.arange(w.shape[0])), b) - logits)))
        if err > 1e-3 * max(1.0, float(np.max(np.abs(logits)))):
            raise model.refusal("outputs.cam_weight", f"CAM identity mean(W.V)+b = logits fails by {err:.3g}")
    head = bind_head(model, feats, logits) if model.sidecar.head is not None else None
    if w is None and head is None:
        raise model.refusal(
            "outputs",
            f"/cam needs the outputs ['cam_bias', 'cam_weight'] (a head that is one dense layer) or a head file "
            f"(sidecar 'head'); it has {sorted(dense) or 'neither'}",
        )
    check_labels(model, int(logits.shape[0]))
    methods = [CamMethod.cam] if w is not None else []
    if w is not None or (head is not None and head.gradient is not None):
        methods.append(CamMethod.gradcam)
    methods += [CamMethod.ablationcam, CamMethod.reciprocam, CamMethod.scorecam, CamMethod.eigencam]
    return CamModel(**model.common_fields(), cam_weight=w, cam_bias=b, head=head, methods=tuple(methods))


def volume_and_logits(model: CamModel, batch: F32, tta: CamTta, deadline: Deadline) -> tuple[F32, F32]:
    """The volume entering GAP ``(K, R, C)`` and the logits ``(Y,)`` of one image; with ``tta=flip``, the means
    over the image and its mirror (one run of both, or two when the model's batch is fixed)."""
    if tta is CamTta.none:
        out = model.run(batch, ["features", "logits"], deadline.left("inference"))
        return out["features"][0], out["logits"][0]
    mirror = np.ascontiguousarray(batch[..., ::-1])
    if isinstance(model.session.get_inputs()[0].shape[0], int):
        runs = [model.run(x, ["features", "logits"], deadline.left("inference")) for x in (batch, mirror)]
        feats, logits = [r["features"][0] for r in runs], [r["logits"][0] for r in runs]
    else:
        out = model.run(np.concatenate([batch, mirror]), ["features", "logits"], deadline.left("inference"))
        feats, logits = list(out["features"]), list(out["logits"])
    return flip_average(feats[0], feats[1]), (logits[0] + logits[1]) / np.float32(2.0)


def raster_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(h, w) of the raster the CAM is resampled onto: the image's shape, long side <= max_side."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def run_cam(
    model: CamModel, data: bytes, params: CamParams, settings: Settings, deadline: Deadline
) -> Outcome[CamResponse]:
    watch = Stopwatch()
    prep = prepare(data, model, settings, overlay=params.overlay, deadline=deadline)
    decode_ms = watch.lap()
    feats, logits = volume_and_logits(model, prep.batch, params.tta, deadline)
    inference_ms = watch.lap()

    probs = softmax(logits)
    classes = [params.class_index] if params.class_index is not None else top_k(probs, params.top_k)
    found = class_maps(model, params.method, prep.batch, feats, logits, classes, deadline, params.max_masks)
    maps = found.maps
    width, height = prep.decoded.width, prep.decoded.height
    out_h, out_w = raster_size(width, height, settings.cam_max_side)
    grid_h, grid_w = int(maps.shape[1]), int(maps.shape[2])
    resample = Resampler.at((grid_h, grid_w), *prep.fit.content_sample_positions(out_h, out_w, grid_h, grid_w))
    cell = np.array([width / out_w, height / out_h] * 2)
    with_bias = model.cam_bias is not None and params.method in (CamMethod.cam, CamMethod.gradcam)

    results: list[CamClass] = []
    first_norm: npt.NDArray[np.float64] | None = None
    for idx, m in zip(classes, maps, strict=True):
        deadline.left("the class maps")
        norm = normalize_map(resample(m), params.norm)
        first_norm = norm if first_norm is None else first_norm
        xyxy = threshold_box(norm, params.threshold, params.region) * cell
        py, px = np.unravel_index(int(np.argmax(norm)), norm.shape)
        bias = float(model.cam_bias[idx]) if with_bias and model.cam_bias is not None else 0.0
        results.append(
            CamClass(
                **class_fields(model, idx, probs, logits),
                cam_score=float(m.mean()) + bias,
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
        method=params.method.value,
        tta=params.tta.value,
        masks=found.masks,
        masks_total=found.masks_total,
        classes=results,
        overlay_png=b64(png) if png is not None and params.embed else None,
        timings=timings,
    )
    return Outcome(response, png, timings, prep.decoded.format)


# ---- the class-map methods (the numpy of app.core.cam_methods, fed by the model and its head) -----------------


@dataclass(frozen=True)
class ClassMaps:
    maps: F32  # (n, R, C), one raw map per class
    masks: int | None = None  # Score-CAM: masked images run
    masks_total: int | None = None  # Score-CAM: channels there were to try


def class_maps(
    model: CamModel,
    method: CamMethod,
    batch: F32,
    feats: F32,
    logits: F32,
    classes: list[int],
    deadline: Deadline,
    max_masks: int = SCORE_CAM_MASKS,
) -> ClassMaps:
    """The raw maps of ``classes`` by ``method`` for one image (its model input ``batch``, its ``feats`` and
    ``logits``); ``method`` is one the model serves (the router resolved it)."""
    if method is CamMethod.cam:
        assert model.cam_weight is not None
        return ClassMaps(class_activation_maps(feats, model.cam_weight, classes))
    if method is CamMethod.gradcam:
        return ClassMaps(class_activation_maps(feats, _gradient(model, feats, deadline), classes))
    if method is CamMethod.ablationcam:
        return ClassMaps(weighted_maps(feats, _ablation(model, feats, logits, classes, deadline)))
    if method is CamMethod.reciprocam:
        grid = (int(feats.shape[1]), int(feats.shape[2]))
        if _pooled(model):
            cells = _pooled_logits(model, recipro_pooled(feats), deadline)
        else:
            cells = _volume_logits(model, grid[0] * grid[1], lambda idx: recipro_volumes(feats, idx), deadline)
        return ClassMaps(recipro_maps(cells, classes, grid))
    if method is CamMethod.scorecam:
        return _score_cam(model, batch, feats, logits, classes, deadline, max_masks)
    return ClassMaps(np.repeat(eigencam_map(feats)[None], len(classes), axis=0))


def _ablation(model: CamModel, feats: F32, logits: F32, classes: list[int], deadline: Deadline) -> F32:
    """Ablation-CAM's channel weights ``(n, K)``."""
    if model.cam_weight is not None:  # a dense head: y - y^(k) = W[y, k] p[k], no need to run it K times
        idx = np.asarray(classes)
        scale = np.maximum(np.abs(logits[idx]), 1e-8)[:, None]
        weights: F32 = (model.cam_weight[idx] * feats.mean(axis=(1, 2)) / scale).astype(np.float32)
        return weights
    if _pooled(model):
        ablated = _pooled_logits(model, ablated_pooled(feats.mean(axis=(1, 2))), deadline)
    else:
        ablated = _volume_logits(model, feats.shape[0], lambda idx: ablated_volumes(feats, idx), deadline)
    return ablation_weights(logits, ablated, classes).astype(np.float32)


def _pooled(model: CamModel) -> bool:
    """Whether the head can be run on pooled vectors (a dense layer, or a head file that starts with GAP)."""
    return model.cam_weight is not None or (model.head is not None and model.head.pooled)


def _head(model: CamModel) -> CamHead:
    if model.head is None:
        raise RuntimeError(f"model {model.name} has no head file")
    return model.head


def _run_head(model: CamModel, inputs: F32, outputs: list[str], deadline: Deadline) -> list[F32]:
    """The head on ``inputs`` (n, ...), in runs of its fixed batch size when it has one."""
    head = _head(model)
    step = head.batch or max(1, len(inputs))
    parts: list[list[F32]] = [[] for _ in outputs]
    for start in range(0, len(inputs), step):
        for part, value in zip(
            parts, head.run(inputs[start : start + step], outputs, deadline.left("the head")), strict=True
        ):
            part.append(value)
    return [np.concatenate(p) for p in parts]


def _pooled_logits(model: CamModel, pooled: F32, deadline: Deadline) -> F32:
    """``(n, Y)`` logits of the head on pooled vectors ``(n, K)``."""
    if model.cam_weight is not None and model.cam_bias is not None:
        out: F32 = pooled @ model.cam_weight.T + model.cam_bias
        return out
    head = _head(model)
    return _run_head(model, pooled[:, :, None, None], [head.output], deadline)[0].reshape(len(pooled), -1)


def _volume_logits(model: CamModel, n: int, volumes: Callable[[npt.NDArray[np.int64]], F32], deadline: Deadline) -> F32:
    """``(n, Y)`` logits of the head on ``volumes(indices)``, built ``HEAD_BATCH`` at a time."""
    head = _head(model)
    parts = []
    for start in range(0, n, HEAD_BATCH):
        idx = np.arange(start, min(n, start + HEAD_BATCH), dtype=np.int64)
        parts.append(_run_head(model, volumes(idx), [head.output], deadline)[0].reshape(len(idx), -1))
    return np.concatenate(parts)


def _gradient(model: CamModel, feats: F32, deadline: Deadline) -> F32:
    """``(Y, K)``: d logits / d pooled (the dense weights, or the head's gradient output at this image)."""
    if model.cam_weight is not None:
        return model.cam_weight
    head = _head(model)
    assert head.gradient is not None
    x = feats.mean(axis=(1, 2))[None, :, None, None] if head.pooled else feats[None]
    grad: F32 = _run_head(model, x, [head.gradient], deadline)[0][0]
    return grad


def _score_cam(
    model: CamModel,
    batch: F32,
    feats: F32,
    logits: F32,
    classes: list[int],
    deadline: Deadline,
    max_masks: int,
) -> ClassMaps:
    """Score-CAM over the channels of highest mean activation, ``SCORE_CAM_BATCH`` masked images per run, until
    ``max_masks`` were run or the share of the time left it may use would be passed (at least one run)."""
    k, r, c = feats.shape
    h, w = int(batch.shape[2]), int(batch.shape[3])
    order = channel_order(feats.mean(axis=(1, 2)))[: max(1, min(max_masks, k))]
    rows = bilinear_weights(r, (np.arange(h) + 0.5) * r / h)
    cols = bilinear_weights(c, (np.arange(w) + 0.5) * c / w)
    fixed = model.session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else SCORE_CAM_BATCH
    started, budget = time.monotonic(), SCORE_CAM_SHARE * deadline.left("Score-CAM")
    used: list[F32] = []
    done = 0
    while done < len(order):
        spent = time.monotonic() - started
        if done and spent + spent / done * step > budget:
            break
        chunk = order[done : done + step]
        masked = (batch * score_masks(feats, chunk, rows, cols)[:, None]).astype(np.float32)
        used.append(model.run(masked, ["logits"], deadline.left("Score-CAM"))["logits"].reshape(len(chunk), -1))
        done += len(chunk)
    weights = score_weights(np.concatenate(used), logits, classes)
    return ClassMaps(weighted_maps(feats[order[:done]], weights), masks=done, masks_total=k)


def bind_head(model: LoadedModel, feats: F32, logits: F32) -> CamHead:
    """The sidecar's head file, opened and checked: its sha256, its input and output names, and that it gives the
    warm-up logits from the warm-up features (and from their mean, when it says it is a pooled head)."""
    spec = model.sidecar.head
    assert spec is not None
    path = model.sidecar_path.parent / spec.file
    if not path.is_file():
        raise model.refusal("head.file", f"head file {path} is missing")
    with path.open("rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != spec.sha256:
            raise model.refusal("head.sha256", f"{path.name} does not match it (file changed or corrupt)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exceptions for a bad graph
        raise model.refusal("head.file", f"onnxruntime cannot load {path.name}: {exc}") from exc
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if spec.input not in inputs or len(inputs) != 1:
        raise model.refusal("head.input", f"{path.name} has the inputs {sorted(inputs)}, not just {spec.input!r}")
    for key, name in (("output", spec.output), ("gradient", spec.gradient)):
        if name is not None and name not in outputs:
            raise model.refusal(f"head.{key}", f"{name!r} is not an output of {path.name} ({sorted(outputs)})")
    fixed = inputs[spec.input][0] if inputs[spec.input] else None
    head = CamHead(
        session,
        path,
        spec.input,
        spec.output,
        spec.gradient,
        spec.pooled_head,
        fixed if isinstance(fixed, int) else None,
    )
    scale = 1e-3 * max(1.0, float(np.max(np.abs(logits))))
    probes = [("features", feats[None])] + (
        [("their mean", feats.mean(axis=(1, 2))[None, :, None, None])] if spec.pooled_head else []
    )
    for what, x in probes:
        try:
            got = head.run(x, [spec.output])[0].reshape(-1)
        except Exception as exc:
            raise model.refusal("head.file", f"{path.name} does not run on {what} {x.shape}: {exc}") from exc
        err = float(np.max(np.abs(got - logits))) if got.shape == logits.shape else float("inf")
        if err > scale:
            field = "head.pooled_head" if what == "their mean" else "head.file"
            raise model.refusal(
                field, f"the head on the warm-up {what} misses the logits by {err:.3g} (shape {got.shape})"
            )
    if spec.gradient is not None:
        x = probes[-1][1]
        grad = head.run(x, [spec.gradient])[0]
        if grad.shape != (1, logits.shape[0], feats.shape[0]):
            raise model.refusal("head.gradient", f"shape {grad.shape}, want (1, {logits.shape[0]}, {feats.shape[0]})")
    return head


def _overlay(decoded: DecodedImage, norm: npt.NDArray[np.float64], top: CamClass, settings: Settings) -> bytes:
    """Heatmap of the first class over the image, with its box and label."""
    canvas = blend_heatmap(display_image(decoded.image, settings.overlay_max_side), norm)
    s = canvas.width / decoded.width
    draw_box(
        canvas, [top.box.x1 * s, top.box.y1 * s, top.box.x2 * s, top.box.y2 * s], f"{top.name} {top.probability:.0%}"
    )
    return png_bytes(canvas)
