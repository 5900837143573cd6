"""Steps shared by every task: decode, fit, softmax, and turning arrays into response fields."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.config import Settings
from app.core.boxes import BoxError, normalize_xyxy, validate_xyxy, xyxy_to_rchw
from app.core.fitting import Fit, fit_image
from app.core.imaging import DecodedImage, decode_image
from app.errors import InvalidParameter
from app.registry import LoadedModel
from app.schemas import Box, ClassPrediction, ImageInfo, NormalizedBox

Region = tuple[float, float, float, float]


class Stopwatch:
    """Milliseconds since the last lap."""

    def __init__(self) -> None:
        self._t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        ms, self._t = (now - self._t) * 1000.0, now
        return round(ms, 3)


class JobSettings:
    """The settings an inference job runs with, given how many jobs run at that moment (itself included).

    Splitting a JPEG's decoding over two threads (``jpeg_decode_threads`` = 2) shortens one request
    but costs CPU (12.4 ms of CPU against Pillow's 9.9 ms for a 12 MP photo): it pays only while a core
    would otherwise be idle.  So a job that runs alone gets the settings as they are, and a job that
    shares the CPU with another gets them with the JPEG decoding left to Pillow.
    """

    def __init__(self, settings: Settings) -> None:
        self.alone = settings
        self.shared = (
            settings.model_copy(update={"jpeg_decode_threads": 0}) if settings.jpeg_decode_threads >= 2 else settings
        )

    def __call__(self, running: int) -> Settings:
        return self.alone if running <= 1 else self.shared


@dataclass(frozen=True)
class Prepared:
    decoded: DecodedImage
    batch: npt.NDArray[np.float32]
    fit: Fit


def prepare(data: bytes, model: LoadedModel, settings: Settings, region: Region | None = None) -> Prepared:
    """bytes -> oriented image -> model input (the image, or ``region`` of it, fitted to the model)."""
    spec = model.spec

    def needed(width: int, height: int) -> float:
        reg = _checked_region(region, width, height)
        return spec.needed_fraction(reg[2] - reg[0], reg[3] - reg[1]) if settings.jpeg_draft else 1.0

    decoded = decode_image(
        data, max_pixels=settings.max_image_pixels, needed_fraction=needed, jpeg_threads=settings.jpeg_decode_threads
    )
    reg = _checked_region(region, decoded.width, decoded.height)
    batch, fit = fit_image(decoded, spec, reg)
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
    b = np.clip(np.asarray(xyxy, dtype=np.float64), 0.0, [width, height, width, height])
    n = normalize_xyxy(b, width, height)
    r, c, h, w = (float(v) for v in xyxy_to_rchw(b))
    nr, nc, nh, nw = (float(v) for v in xyxy_to_rchw(n))
    x1, y1, x2, y2 = (float(v) for v in b)
    nx1, ny1, nx2, ny2 = (float(v) for v in n)
    return Box(
        r=r, c=c, h=h, w=w, x1=x1, y1=y1, x2=x2, y2=y2,
        normalized=NormalizedBox(x1=nx1, y1=ny1, x2=nx2, y2=ny2, r=nr, c=nc, h=nh, w=nw),
    )


def image_info(d: DecodedImage) -> ImageInfo:
    return ImageInfo(
        width=d.width, height=d.height, format=d.format, mode=d.mode, exif_orientation=d.orientation, frames=d.frames,
        decoder=d.decoder,
    )


def class_prediction(model: LoadedModel, index: int, probs: npt.ArrayLike, logits: npt.ArrayLike) -> ClassPrediction:
    lab = model.sidecar.labels[index]
    return ClassPrediction(
        index=index, id=lab.id, name=lab.name, probability=float(np.asarray(probs)[index]), logit=float(np.asarray(logits)[index])
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
