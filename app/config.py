"""Service settings, read from the environment (prefix ``LOCSVC_``) or a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset, ``taskset``); a CPU quota
    (Kubernetes' CPU limit) does not show here, so set the thread settings there."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(BaseSettings):
    """Every field can be set as ``LOCSVC_<NAME>`` (e.g. ``LOCSVC_MAX_UPLOAD_BYTES=5000000``)."""

    model_config = SettingsConfigDict(env_prefix="LOCSVC_", env_file=".env", extra="ignore")

    models_dir: Path = Field(REPO_MODELS, description="Folder of *.onnx models, each with its sidecar *.json.")
    models: list[str] = Field(
        default_factory=list, description="Model names to load (default: every sidecar in models_dir)."
    )
    verify_sha256: bool = Field(
        True, description="Refuse to load a model whose file does not match its sidecar sha256."
    )
    default_cam_model: str | None = Field(
        None, description="Model used by /cam when none is named (default: first cam model)."
    )
    default_localize_model: str | None = Field(None, description="Model used by /localize when none is named.")
    default_pose_model: str | None = Field(None, description="Model used by /pose when none is named.")

    max_upload_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest accepted request body, in bytes (413 beyond, refused while streaming).",
    )
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="Largest accepted image, width x height, read from its header (413 beyond)."
    )
    max_decode_bytes: int = Field(
        200 * 1024 * 1024,
        gt=0,
        description="Largest memory the decoded images of the requests in inference may take together, every "
        "conversion included, each computed from its header before decoding: one image over it is refused (413); "
        "one that does not fit beside the others' waits for them, within the job deadline.",
    )
    jpeg_draft: bool = Field(
        True,
        description="Decode at a reduced scale when the model needs fewer pixels: JPEGs at a reduced DCT scale, "
        "other images that need converting to RGB reduced by an integer factor before the conversion.",
    )

    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads (parallel graph branches).")
    ort_spinning: bool = Field(False, description="Let onnxruntime worker threads spin while idle (faster, burns CPU).")
    blas_threads: int = Field(
        1,
        ge=0,
        description="Threads of numpy's OpenBLAS in the server (0: leave its default, one per core). Its calls "
        "here are tiny (CAM maps); more threads only spin and take the cores from onnxruntime.",
    )
    ort_arena: Literal["shared", "session", "off"] = Field(
        "shared",
        description="onnxruntime's CPU memory arena: one shared by all models (holds the peak of the runs "
        "in flight), one per session (onnxruntime's default: each model keeps its own peak), or none (malloc per run).",
    )
    execution_provider: Literal["auto", "openvino", "cpu"] = Field(
        "auto",
        description="onnxruntime execution provider of the models: OpenVINO's CPU plugin in fp32 (package "
        "onnxruntime-ep-openvino; outputs within 5e-5, 0.54-0.58x the inference time at 2 threads; its 1.8.1 offers "
        "Intel CPUs only), onnxruntime's own CPU provider, or auto: OpenVINO where it is offered, else cpu (the "
        "start-up log says which, and why). Named, openvino refuses to start where it cannot be created.",
    )
    openvino_cache_dir: Path | None = Field(
        None,
        description="Folder where OpenVINO keeps the models it compiled (created if missing): every start after "
        "the first loads them instead of compiling again (0.13-0.14 against 0.44-0.49 s per int8 twin). Unset: no "
        "cache; one that cannot be created or written is left out with a warning. Unused on onnxruntime's CPU "
        "provider.",
    )
    max_concurrency: int = Field(
        4,
        ge=1,
        description="Requests in inference (decode, fit, onnxruntime, post-processing) at once; others wait in the "
        "queue. 4 is two per core on 2 cores: part of each is Python under the GIL, and the others' inference "
        "fills the cores meanwhile.",
    )
    intra_op_threads: int = Field(
        default_factory=lambda data: -(-cpu_cores() // data["max_concurrency"]),
        ge=1,
        description="onnxruntime threads per inference. Default: the cores this process may run on over "
        "max_concurrency, rounded up (1 on 2 cores): with every slot busy, the threads fill the cores without "
        "taking them from the requests' Python work (docs/decisions/thread-defaults.md). openvino: threads per "
        "stream, max_concurrency streams asked, threads x streams capped at the cores (2 streams of 1 on 2 cores).",
    )
    max_queue: int = Field(
        8,
        ge=0,
        description="Requests admitted beyond those in inference (reading their body or waiting for a slot); "
        "beyond, a request is refused with 503 before its body is read.",
    )
    queue_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time from a request's admission to its inference slot, its body's upload "
        "included (a body not in by then: 408; no slot by then: 503).",
    )
    job_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest time a request holds its inference slot: decode, fit, inference and "
        "post-processing under one deadline (503 beyond; onnxruntime is terminated, other stages stop at the next one).",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After header value on 503 responses, in seconds.")

    cam_max_side: int = Field(
        256,
        ge=8,
        description="CAMs are resampled onto at most this many pixels along the image's long side "
        "for thresholding; boxes are then scaled to full-image pixels (256: half the post-processing of 512, "
        "box IoU 0.996 with 512's on real photos; docs/cam.md).",
    )
    overlay_max_side: int = Field(1024, ge=16, description="Long side of PNG overlays, in pixels.")

    auth: bool = Field(
        True,
        description="Require header X-API-Key (= api_key) on every endpoint but health checks, docs and /. The "
        "service refuses to start with auth on and no api_key; LOCSVC_AUTH=off serves without authentication.",
    )
    api_key: str | None = Field(None, description="The API key clients send in X-API-Key (needed while auth is on).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (empty: CORS off).")
    log_level: str = Field(
        "INFO", description="Log level of the app's loggers (app.*; uvicorn's follow its --log-level)."
    )
    log_json: bool = Field(
        True,
        description="Emit one JSON object per log line, uvicorn's start-up and shutdown lines included. "
        "Either way the access log is the app's line (request id, route, status, duration); uvicorn's is muted.",
    )
