"""The sidecar JSON beside each ``.onnx`` - the contract written by ``export/``, parsed and validated."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.fitting import FitMode, InputSpec


class Task(StrEnum):
    cam = "cam"
    localize = "localize"
    pose = "pose"


BoxFormat = Literal["rchw_norm", "xyxy_norm"]
"""How a localize model's ``box`` output is laid out: (r, c, h, w) or (x1, y1, x2, y2), fractions of its input."""

CAM_OUTPUTS = frozenset({"features", "cam_weight", "cam_bias", "logits"})


class SidecarInput(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = "image"
    layout: str = "NCHW"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: str = "RGB"
    fit: FitMode = FitMode.stretch
    pre_resize: tuple[int, int] | None = None
    resample: str = "bilinear"


class Normalization(BaseModel):
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Label(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    id: str
    name: str


Fraction = Annotated[float, Field(gt=0, le=1)]


class Framing(BaseModel):
    """How the pose model's training boxes frame a person around the joints (``app.core.boxes.joints_frame``)."""

    span: tuple[Fraction, Fraction] = Field(
        description="The fractions of the box's width and height that the joints span, about its centre."
    )
    min_side_ratio: Fraction = Field(description="Neither side of the box is under this times the other.")


class JointsSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    names: list[str]
    edges: list[tuple[int, int]]
    coords: str = "xy_norm_box"
    framing: Framing | None = Field(
        None,
        description="With it, /pose without a box re-frames its first answer (the joints in the finder's box, or "
        "in the whole image) as the model was trained, and regresses the joints again in that box.",
    )


class HeadSpec(BaseModel):
    """A CAM model's head as its own graph, ``features -> logits`` (the main file then holds the backbone, image ->
    ``features``, ``logits``): what the class-map methods other than CAM run, when the head is not one dense layer."""

    model_config = ConfigDict(extra="allow")
    file: str = Field(description="The head's .onnx, relative to the sidecar.")
    sha256: str
    input: str = Field("features", description="Its input: the volume (N, K, R, C) that enters the GAP.")
    output: str = Field("logits", description="Its output: the logits (N, classes).")
    gradient: str | None = Field(
        None,
        description="Optional output (N, classes, K): sum over r, c of d logits / d features[k, r, c] "
        "(= d logits / d pooled for a pooled head), which Grad-CAM needs.",
    )
    pooled_head: bool = Field(
        False,
        description="The head starts with global average pooling: fed the pooled vector as (N, K, 1, 1), it "
        "gives the same as on the whole volume.",
    )


class Sidecar(BaseModel):
    """Parsed sidecar.  Unknown fields are kept (and shown by ``GET /models``)."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = 1
    name: str
    task: Task
    file: str
    sha256: str
    input: SidecarInput
    normalization: Normalization
    outputs: dict[str, str]
    labels: list[Label] = Field(default_factory=list)
    box_format: BoxFormat | None = Field(
        None, description="Layout of a localize model's box output (default rchw_norm)."
    )
    joints: JointsSpec | None = None
    person_model: str | None = Field(
        None,
        description="A pose model's person finder: the name of a one-class localize model whose box frames the "
        "person as the pose model was trained to see it; /pose runs it when a request gives no box.",
    )
    head: HeadSpec | None = Field(None, description="A CAM model's head graph, when its head is not one dense layer.")
    provenance: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] | None = Field(
        None,
        description="How an int8 twin was made from its fp32 model. Such a graph runs on onnxruntime's own CPU "
        "provider, whatever LOCSVC_EXECUTION_PROVIDER says (OpenVINO's compile of it would slow the start).",
    )

    def input_spec(self) -> InputSpec:
        return InputSpec(
            height=self.input.height,
            width=self.input.width,
            fit=self.input.fit,
            pre_resize=self.input.pre_resize,
            scale=self.normalization.scale,
            mean=self.normalization.mean,
            std=self.normalization.std,
        )

    @property
    def has_cam(self) -> bool:
        return self.outputs.keys() >= CAM_OUTPUTS
