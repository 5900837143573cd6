"""Steps shared by every task: decode, fit, softmax, and turning arrays into response fields."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar

import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.core.boxes import BoxError, clip_xyxy, normalize_xyxy, validate_xyxy, xyxy_to_rchw
from app.core.fitting import Fit, fit_image
from app.core.imaging import DecodedImage, open_image
from app.errors import InvalidParameter, PayloadTooLarge, RequestTimeout
from app.limits import DecodeMemory
from app.model import Arrays, LoadedModel
from app.schemas import Box, ClassPrediction, ImageInfo, NormalizedBox, Timings

Region = tuple[float, float, float, float]


class Stopwatch:
    """Milliseconds since the last lap."""

    def __init__(self) -> None:
        self._t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        ms, self._t = (now - self._t) * 1000.0, now
        return round(ms, 3)


@dataclass(frozen=True)
class Deadline:
    """The one deadline of an inference job (``time.monotonic()``), from the moment it has its slot: checked
    between stages, and what is left of it bounds the onnxruntime run (which is then terminated). With
    ``memory``, also the job's share of the decode memory all jobs share: what :meth:`reserve` took, held until
    :meth:`close` (the job's end)."""

    at: float
    budget_s: float
    memory: DecodeMemory | None = None
    _held: list[int] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def start(cls, budget_s: float, memory: DecodeMemory | None = None) -> Deadline:
        """The deadline ``budget_s`` from now."""
        return cls(time.monotonic() + budget_s, budget_s, memory)

    def reserve(self, nbytes: int, what: str) -> None:
        """Hold ``nbytes`` of the shared decode memory until :meth:`close`: at once if that much is free, else
        when the other jobs give it back; 503 if not by the deadline, 413 if it cannot fit beside what this
        job already holds. Nothing without ``memory``."""
        if self.memory is None:
            return
        held = sum(self._held)
        if held + nbytes > self.memory.total:
            raise PayloadTooLarge(
                f"{what} would take {nbytes} bytes beside the {held} this request holds, over the limit of "
                f"{self.memory.total}",
                field="image",
            )
        if not self.memory.take(nbytes, self.at):
            raise RequestTimeout(
                f"the request's {self.budget_s:g} s passed while it waited for decode memory that other requests "
                "hold, and it was stopped; retry later"
            )
        self._held.append(nbytes)

    def close(self) -> None:
        """Give back the decode memory this job holds (idempotent)."""
        if self.memory is not None and self._held:
            self.memory.give(sum(self._held))
            self._held.clear()

    def left(self, stage: str) -> float:
        """Seconds left before ``stage``; 503 when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise RequestTimeout(
                f"the request took longer than {self.budget_s:g} s (before {stage}) and was stopped; retry later"
            )
        return left


R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a job gives back: the typed response, the PNG overlay when one was drawn, and beside them the
    stage timings and the image's format for the metrics."""

    response: R
    png: bytes | None
    timings: Timings
    format: str


@dataclass(frozen=True)
class Prepared:
    decoded: DecodedImage
    batch: npt.NDArray[np.float32]
    fit: Fit


def prepare(
    data: bytes,
    model: LoadedModel,
    settings: Settings,
    region: Region | None = None,
    *,
    overlay: bool = False,
    deadline: Deadline | None = None,
) -> Prepared:
    """bytes -> oriented image -> model input (the image, or ``region`` of it, fitted to the model)."""
    return fit_region(decode_for(data, model, settings, region, overlay=overlay, deadline=deadline), model, region)


def decode_for(
    data: bytes,
    model: LoadedModel,
    settings: Settings,
    region: Region | None = None,
    *,
    overlay: bool = False,
    pixels: float = 1.0,
    deadline: Deadline | None = None,
) -> DecodedImage:
    """bytes -> oriented image, decoded at the smallest scale that still gives the model (and, with ``overlay``,
    the overlay picture) the pixels it needs for ``region`` (default: the whole image): ``pixels`` of its input
    side along each axis (1: all of it). In a job (``deadline``), the decode's cost is first reserved from the
    decode memory all jobs share (:meth:`Deadline.reserve`); benchmarks and tests may leave it out."""
    opened = open_image(data, max_pixels=settings.max_image_pixels)
    reg = _checked_region(region, opened.width, opened.height)
    fraction = pixels * model.spec.needed_fraction(reg[2] - reg[0], reg[3] - reg[1]) if settings.jpeg_draft else 1.0
    if overlay:
        fraction = max(fraction, settings.overlay_max_side / max(opened.width, opened.height))
    return opened.decode(min(1.0, fraction), settings.max_decode_bytes, None if deadline is None else deadline.reserve)


def fit_region(decoded: DecodedImage, model: LoadedModel, region: Region | None) -> Prepared:
    """A decoded image, or ``region`` of it (xyxy pixels of the decoded image), fitted to ``model``'s input."""
    batch, fit = fit_image(decoded, model.spec, _checked_region(region, decoded.width, decoded.height))
    return Prepared(decoded, batch, fit)


def _checked_region(region: Region | None, width: int, height: int) -> Region:
    if region is None:
        return (0.0, 0.0, float(width), float(height))
    try:
        x1, y1, x2, y2 = (float(v) for v in validate_xyxy(region, width, height))
    except BoxError as exc:
        raise InvalidParameter(str(exc), field="box") from exc
    return (x1, y1, x2, y2)


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


def top_k(probs: npt.ArrayLike, k: int) -> list[int]:
    p = np.asarray(probs)
    k = min(k, p.size)
    idx = np.argpartition(-p, k - 1)[:k]
    return [int(i) for i in idx[np.argsort(-p[idx], kind="stable")]]


def box_out(xyxy: npt.ArrayLike, width: int, height: int) -> Box:
    """A response Box from xyxy image pixels (clipped to the image)."""
    b = clip_xyxy(xyxy, width, height)
    n = normalize_xyxy(b, width, height)
    r, c, h, w = (float(v) for v in xyxy_to_rchw(b))
    nr, nc, nh, nw = (float(v) for v in xyxy_to_rchw(n))
    x1, y1, x2, y2 = (float(v) for v in b)
    nx1, ny1, nx2, ny2 = (float(v) for v in n)
    return Box(
        r=r,
        c=c,
        h=h,
        w=w,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        normalized=NormalizedBox(x1=nx1, y1=ny1, x2=nx2, y2=ny2, r=nr, c=nc, h=nh, w=nw),
    )


def image_info(d: DecodedImage) -> ImageInfo:
    return ImageInfo(
        width=d.width,
        height=d.height,
        format=d.format,
        mode=d.mode,
        exif_orientation=d.orientation,
        animated=d.animated,
    )


class ClassFields(TypedDict):
    """The fields of :class:`ClassPrediction`, for it and for the responses that extend it (``CamClass``)."""

    index: int
    id: str
    name: str
    probability: float
    logit: float


def class_fields(model: LoadedModel, index: int, probs: npt.ArrayLike, logits: npt.ArrayLike) -> ClassFields:
    lab = model.sidecar.labels[index]
    return ClassFields(
        index=index,
        id=lab.id,
        name=lab.name,
        probability=float(np.asarray(probs)[index]),
        logit=float(np.asarray(logits)[index]),
    )


def class_prediction(model: LoadedModel, index: int, probs: npt.ArrayLike, logits: npt.ArrayLike) -> ClassPrediction:
    return ClassPrediction(**class_fields(model, index, probs, logits))


def check_labels(model: LoadedModel, classes: int) -> None:
    """Load-time check of a classifier: one label per class, indexed 0..classes-1 (else the response would
    name the wrong class, or fail on an index)."""
    labels = model.sidecar.labels
    if len(labels) != classes:
        raise model.refusal("labels", f"{len(labels)} labels for {classes} classes")
    if any(lab.index != i for i, lab in enumerate(labels)):
        raise model.refusal("labels", f"label indices must be 0..{classes - 1}, in order")


def output_width(model: LoadedModel, warm: Arrays, output: str) -> int:
    """Numbers per image of a contract output, from the warm-up run (batch of one)."""
    return int(np.asarray(warm[output]).reshape(1, -1).shape[1])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
