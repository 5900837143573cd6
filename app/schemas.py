"""Typed API responses (pydantic).  Boxes and points are in pixels of the oriented, full-size image."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class OutputFormat(StrEnum):
    json = "json"
    png = "png"


class NormalizedBox(BaseModel):
    """The box as fractions of the image width (x, c, w) and height (y, r, h), in [0, 1]."""

    x1: float
    y1: float
    x2: float
    y2: float
    r: float
    c: float
    h: float
    w: float


class Box(BaseModel):
    """Axis-aligned box in image pixels: ``(r, c, h, w)`` = row and column of the upper-left corner,
    height, width; and the same as corners ``x1, y1`` (upper-left) ``x2, y2`` (lower-right, exclusive)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "r": 40.0,
                "c": 96.0,
                "h": 300.0,
                "w": 250.0,
                "x1": 96.0,
                "y1": 40.0,
                "x2": 346.0,
                "y2": 340.0,
                "normalized": {
                    "x1": 0.214,
                    "y1": 0.133,
                    "x2": 0.769,
                    "y2": 1.0,
                    "r": 0.133,
                    "c": 0.214,
                    "h": 1.0,
                    "w": 0.556,
                },
            }
        }
    )
    r: float
    c: float
    h: float
    w: float
    x1: float
    y1: float
    x2: float
    y2: float
    normalized: NormalizedBox


class ImageInfo(BaseModel):
    width: int = Field(description="Width of the image after EXIF orientation, in pixels.")
    height: int = Field(description="Height of the image after EXIF orientation, in pixels.")
    format: str = Field(description="Format sniffed from the bytes.")
    mode: str = Field(description="Pillow mode of the upload before conversion to RGB.")
    exif_orientation: int = Field(description="EXIF orientation tag that was applied (1 = none).")
    animated: bool = Field(description="Whether the file holds more frames or pages; only the first is read.")


class ClassPrediction(BaseModel):
    index: int = Field(description="Class index in the model's output.")
    id: str = Field(description="Dataset id of the class, e.g. the WordNet id n02085620.")
    name: str = Field(description="Human-readable class name.")
    probability: float = Field(description="Softmax probability over the model's classes.")
    logit: float


class CamClass(ClassPrediction):
    cam_score: float = Field(
        description="S_y = mean over the grid of M_y, plus the dense bias for cam (and gradcam on a dense head): "
        "then it equals the logit; for the other methods, the mean of M_y."
    )
    box: Box = Field(description="Box enclosing the thresholded CAM region, in image pixels.")
    peak: tuple[float, float] = Field(description="(x, y) in image pixels of the CAM's maximum.")
    grid: list[list[float]] | None = Field(
        None, description="Raw M_y on the feature grid (rows of columns), if include_grid."
    )


class Timings(BaseModel):
    decode_ms: float
    inference_ms: float
    postprocess_ms: float


_CAM_EXAMPLE: dict[str, Any] = {
    "model": "efficientnet_lite0_imagenet",
    "image": {"width": 451, "height": 300, "format": "JPEG", "mode": "RGB", "exif_orientation": 1, "animated": False},
    "threshold": 0.2,
    "normalization": "minmax",
    "region": "peak",
    "grid_size": [7, 7],
    "method": "cam",
    "masks": None,
    "masks_total": None,
    "classes": [
        {
            "index": 285,
            "id": "n02124075",
            "name": "Egyptian cat",
            "probability": 0.8146,
            "logit": 10.6423,
            "cam_score": 10.6423,
            "box": {
                "r": 0.0,
                "c": 36.0,
                "h": 300.0,
                "w": 373.0,
                "x1": 36.0,
                "y1": 0.0,
                "x2": 409.0,
                "y2": 300.0,
                "normalized": {
                    "x1": 0.0798,
                    "y1": 0.0,
                    "x2": 0.9069,
                    "y2": 1.0,
                    "r": 0.0,
                    "c": 0.0798,
                    "h": 1.0,
                    "w": 0.8271,
                },
            },
            "peak": [289.5, 107.5],
            "grid": None,
        }
    ],
    "overlay_png": None,
    "timings": {"decode_ms": 2.6, "inference_ms": 24.4, "postprocess_ms": 13.4},
}


class CamResponse(BaseModel):
    """/cam on scikit-image's cat photo (``skimage.data.chelsea()``), top_k=1: the example below is a real answer."""

    model_config = ConfigDict(json_schema_extra={"example": _CAM_EXAMPLE})
    model: str
    image: ImageInfo
    threshold: float = Field(description="Fraction of the normalized CAM that a pixel must reach to be in the box.")
    normalization: str = Field(description="How each map was brought to [0, 1] before thresholding.")
    region: str = Field(description="Which connected region of the thresholded map the box encloses.")
    grid_size: tuple[int, int] = Field(description="(rows, columns) of the CAM feature grid.")
    tta: str = Field("none", description="Test-time augmentation: `none`, or `flip` (the image and its mirror).")
    method: str = Field(
        "cam",
        description="How the class maps were computed (cam, gradcam, ablationcam, reciprocam, scorecam, eigencam).",
    )
    masks: int | None = Field(
        None,
        description="scorecam: how many masked images were run (the channels of highest mean activation first, "
        "within max_masks and the time budget).",
    )
    masks_total: int | None = Field(None, description="scorecam: how many channels (possible masks) the volume has.")
    classes: list[CamClass]
    overlay_png: str | None = Field(
        None, description="Base64 PNG: heatmap of the first class and its box over the image."
    )
    timings: Timings


class LocalizeResponse(BaseModel):
    model: str
    image: ImageInfo
    label: ClassPrediction = Field(description="The predicted class (top-1).")
    box: Box = Field(description="The regressed box of the object, in image pixels.")
    top_k: list[ClassPrediction]
    overlay_png: str | None = Field(None, description="Base64 PNG: the box and label over the image.")
    timings: Timings


class Joint(BaseModel):
    index: int
    name: str
    x: float = Field(description="Column in image pixels.")
    y: float = Field(description="Row in image pixels.")
    x_norm: float = Field(description="x as a fraction of the person box width (0 = its left edge).")
    y_norm: float = Field(description="y as a fraction of the person box height (0 = its top edge).")
    visibility: float | None = Field(None, description="Probability that the joint is visible, if the model gives one.")


class Edge(BaseModel):
    a: int
    b: int
    names: tuple[str, str]


class PoseResponse(BaseModel):
    model: str
    image: ImageInfo
    person_box: Box = Field(description="The box the joints were regressed in.")
    person_box_source: Literal["request", "person_model", "image"] = Field(
        description="Where person_box came from: the request's `box`; the pose model's person finder (its "
        "sidecar's person_model, when no box is given); or the whole image (no box, no person finder). Without "
        "a request's box, a model with a framing (sidecar joints.framing) re-frames that box around its first "
        "answer's joints."
    )
    joints: list[Joint]
    edges: list[Edge]
    overlay_png: str | None = Field(None, description="Base64 PNG: the skeleton over the image.")
    timings: Timings


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    task: str
    file: str
    sha256: str
    input: dict[str, object]
    normalization: dict[str, object]
    outputs: dict[str, str]
    num_labels: int
    serves: list[str] = Field(description="Endpoints this model can serve.")
    cam_methods: list[str] = Field(
        default_factory=list, description="The /cam methods it serves (the first is its default); empty if none."
    )
    person_model: str | None = Field(
        None, description="A pose model's person finder (the localize model /pose runs when no box is given)."
    )
    metrics: dict[str, object]
    provenance: dict[str, object]


class Health(BaseModel):
    status: str


class Refusal(BaseModel):
    """Why a sidecar in models_dir is not served."""

    field: str | None = Field(description="The sidecar field at fault (e.g. joints, box_format, outputs.box, sha256).")
    reason: str


class Ready(BaseModel):
    status: str
    models: dict[str, float] = Field(description="Loaded models and their warm-up time in ms.")
    refused: dict[str, Refusal] = Field(
        default_factory=dict, description="Sidecars in models_dir that were refused at load, by file name, and why."
    )


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "https://localization-service.dev/problems/invalid-parameter",
                "title": "Invalid parameter",
                "status": 422,
                "detail": "unknown label 'unicorn' for model efficientnet_lite0_imagenet",
                "instance": "/cam",
                "field": "label",
                "request_id": "5b0a3c2e9f1d4c8a",
            }
        }
    )
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = None
    errors: list[dict[str, object]] | None = None
    request_id: str | None = None
