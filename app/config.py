"""Service settings, read from the environment (prefix ``LOCSVC_``) or a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    """Every field can be set as ``LOCSVC_<NAME>`` (e.g. ``LOCSVC_MAX_UPLOAD_BYTES=5000000``)."""

    model_config = SettingsConfigDict(env_prefix="LOCSVC_", env_file=".env", extra="ignore")

    models_dir: Path = Field(REPO_MODELS, description="Folder of *.onnx models, each with its sidecar *.json.")
    models: list[str] = Field(
        default_factory=list, description="Model names to load (default: every sidecar in models_dir)."
    )
    verify_sha256: bool = Field(True, description="Refuse to load a model whose file does not match its sidecar sha256.")
    default_cam_model: str | None = Field(None, description="Model used by /cam when none is named (default: first cam model).")
    default_localize_model: str | None = Field(None, description="Model used by /localize when none is named.")
    default_pose_model: str | None = Field(None, description="Model used by /pose when none is named.")

    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest accepted request body, in bytes (413 beyond).")
    max_image_pixels: int = Field(50_000_000, gt=0, description="Largest accepted decoded image, width x height (413 beyond).")
    jpeg_draft: bool = Field(True, description="Decode JPEGs at reduced DCT scale when the model needs fewer pixels.")
    jpeg_decode_threads: int = Field(
        2, ge=0, le=2, description="Threads of the service's own decoder for JPEGs read at 1/8 scale (baseline, "
        "greyscale or YCbCr 4:4:4/4:2:2/4:2:0; the same pixels as Pillow, bit for bit): 2 splits the entropy "
        "decoding of one photo over two cores, 1 keeps it on one, 0 leaves every JPEG to Pillow."
    )

    intra_op_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="onnxruntime threads per inference."
    )
    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads (parallel graph branches).")
    ort_spinning: bool = Field(False, description="Let onnxruntime worker threads spin while idle (faster, burns CPU).")
    blas_threads: int = Field(
        1, ge=0, description="Threads of numpy's OpenBLAS in the server (0: leave its default, one per core). Its calls "
        "here are tiny (CAM maps); more threads only spin and take the cores from onnxruntime."
    )
    ort_arena: Literal["shared", "session", "off"] = Field(
        "shared", description="onnxruntime's CPU memory arena: one shared by all models (holds the peak of the runs "
        "in flight), one per session (onnxruntime's default: each model keeps its own peak), or none (malloc per run)."
    )
    max_concurrency: int = Field(2, ge=1, description="Requests in inference at once; others wait in the queue.")
    max_queue: int = Field(32, ge=0, description="Requests allowed to wait for an inference slot; beyond -> 503.")
    queue_timeout_s: float = Field(10.0, gt=0, description="Longest wait for an inference slot before a 503.")
    inference_timeout_s: float = Field(
        30.0, gt=0, description="Longest onnxruntime run of one request; it is then terminated and the answer is a 503."
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After header value on 503 responses, in seconds.")

    cam_max_side: int = Field(
        512, ge=8, description="CAMs are resampled onto at most this many pixels along the image's long side "
        "for thresholding; boxes are then scaled to full-image pixels."
    )
    overlay_max_side: int = Field(1024, ge=16, description="Long side of PNG overlays, in pixels.")

    api_key: str | None = Field(None, description="When set, every endpoint but health checks, docs and / needs header X-API-Key.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (empty: CORS off).")
    log_level: str = Field("INFO", description="Log level of the app's loggers (app.*; uvicorn's follow its --log-level).")
    log_json: bool = Field(
        True, description="Emit one JSON object per log line, uvicorn's start-up and shutdown lines included. "
        "Either way the access log is the app's line (request id, route, status, duration); uvicorn's is muted."
    )
