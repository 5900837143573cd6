"""LSP / LSPET loading, person boxes, the service's preprocessing and training augmentation.

Coordinate convention used everywhere here: *continuous* pixel coordinates with the origin at the image's
top-left corner, pixel ``i`` spanning ``[i, i + 1)`` (so its centre is ``i + 0.5``).  The MATLAB annotations
are 1-based pixel centres, hence ``x = x_mat - 0.5``.  A joint normalized to a box ``(x1, y1, x2, y2)`` is
``u = (x - x1) / (x2 - x1)``, ``v = (y - y1) / (y2 - y1)`` - exactly what PIL's crop + resize preserves.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

JOINT_NAMES = (
    "r_ankle",
    "r_knee",
    "r_hip",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_wrist",
    "r_elbow",
    "r_shoulder",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "neck",
    "head_top",
)
NUM_JOINTS = len(JOINT_NAMES)
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9))
# Skeleton for drawing: legs, hips, arms, shoulders, torso sides, neck, head.
EDGES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (4, 5),
    (6, 7),
    (7, 8),
    (8, 9),
    (9, 10),
    (10, 11),
    (2, 8),
    (3, 9),
    (8, 12),
    (9, 12),
    (12, 13),
)
Box = tuple[float, float, float, float]  # (x1, y1, x2, y2), continuous pixels
IntBox = tuple[int, int, int, int]  # the service's integer crop of a Box
MEAN = 0.5
STD = 0.5
LSP_TRAIN_IMAGES = 800  # lsp_train images 1-800 train, 801-1000 validate
LSP_TOTAL = 1000
# LSP crops: the joints' bounding box spans ~55 % of the image width and ~76 % of its height (medians over
# lsp_train); LSPET person boxes are built with the same margins so that they look like LSP crops.
LSP_BOX_FRACTION = (0.55, 0.76)
MIN_SIDE_RATIO = 0.25  # neither side of a person box under a quarter of the other


def flip_permutation() -> np.ndarray:
    """Index permutation that swaps every left joint with its right counterpart (an involution)."""
    perm = np.arange(NUM_JOINTS)
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


@dataclass(frozen=True)
class PoseSample:
    """One annotated person: image path, joints (14, 2) in continuous pixels, masks and base box."""

    path: str
    joints: np.ndarray
    annotated: np.ndarray
    visible: np.ndarray
    box: tuple[float, float, float, float]


def read_lsp_joints(mat_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LSP ``joints`` (3, 14, N), flag 1 = occluded -> (N, 14, 2) continuous xy, annotated, visible."""
    raw = np.asarray(sio.loadmat(str(mat_path))["joints"], dtype=np.float64)
    if raw.ndim != 3 or raw.shape[:2] != (3, NUM_JOINTS):
        raise ValueError(f"{mat_path}: LSP joints must be (3, 14, N), got {raw.shape}")
    xy = np.transpose(raw[:2], (2, 1, 0)) - 0.5
    occluded = raw[2].T > 0.5
    return xy, np.ones_like(occluded), ~occluded


def read_lspet_joints(mat_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LSPET ``joints`` (14, 3, N), flag 1 = annotated+visible, 0 = not annotated (garbage xy, zeroed)."""
    raw = np.asarray(sio.loadmat(str(mat_path))["joints"], dtype=np.float64)
    if raw.ndim != 3 or raw.shape[:2] != (NUM_JOINTS, 3):
        raise ValueError(f"{mat_path}: LSPET joints must be (14, 3, N), got {raw.shape}")
    xy = np.transpose(raw[:, :2], (2, 0, 1)) - 0.5
    annotated = raw[:, 2].T > 0.5
    xy[~annotated] = 0.0
    return xy, annotated, annotated.copy()


def joints_box(xy: np.ndarray, annotated: np.ndarray) -> tuple[float, float, float, float]:
    """An LSP-like person box around the annotated joints (LSP's median margins, minimum aspect 1:4)."""
    pts = xy[annotated]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    w = max(x1 - x0, 1.0) / LSP_BOX_FRACTION[0]
    h = max(y1 - y0, 1.0) / LSP_BOX_FRACTION[1]
    side = max(w, h)
    w, h = max(w, MIN_SIDE_RATIO * side), max(h, MIN_SIDE_RATIO * side)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def lsp_samples(root: Path, indices: range | list[int]) -> list[PoseSample]:
    """LSP images (0-based indices) as whole-image person crops."""
    xy, ann, vis = read_lsp_joints(root / "joints.mat")
    out = []
    for i in indices:
        path = root / "images" / f"im{i + 1:04d}.jpg"
        with Image.open(path) as im:
            w, h = im.size
        out.append(PoseSample(str(path), xy[i], ann[i], vis[i], (0.0, 0.0, float(w), float(h))))
    return out


def lspet_samples(root: Path, min_annotated: int = 10) -> list[PoseSample]:
    """LSPET people with at least ``min_annotated`` annotated joints, boxed around their joints.

    ``root`` is LSPET as shipped, or the ``lspet_crops`` folder of a pack (``export.pose.pack``), whose
    ``samples.json`` already holds the people, their joints and boxes in crop coordinates.
    """
    if (root / "samples.json").exists():
        records = json.loads((root / "samples.json").read_text())["samples"]
        return [
            PoseSample(
                str(root / r["file"]),
                np.asarray(r["joints"], dtype=np.float64),
                np.asarray(r["annotated"], dtype=bool),
                np.asarray(r["visible"], dtype=bool),
                (float(r["box"][0]), float(r["box"][1]), float(r["box"][2]), float(r["box"][3])),
            )
            for r in records
            if sum(r["annotated"]) >= min_annotated
        ]
    xy, ann, vis = read_lspet_joints(root / "joints.mat")
    out = []
    for i in range(xy.shape[0]):
        if ann[i].sum() < min_annotated:
            continue
        path = root / "images" / f"im{i + 1:05d}.jpg"
        out.append(PoseSample(str(path), xy[i], ann[i], vis[i], joints_box(xy[i], ann[i])))
    return out


def to_tensor_array(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 (3, H, W), ``(pixel / 255 - mean) / std`` as in the sidecar."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(((arr - MEAN) / STD).transpose(2, 0, 1))


def service_crop(img: Image.Image, box: Box, size: int) -> tuple[Image.Image, IntBox]:
    """The service's preprocessing: integer crop (floor/ceil) + stretch bilinear resize.  Returns the int box."""
    x1, y1 = math.floor(box[0]), math.floor(box[1])
    x2, y2 = math.ceil(box[2]), math.ceil(box[3])
    crop = img.convert("RGB").crop((x1, y1, x2, y2)).resize((size, size), Image.Resampling.BILINEAR)
    return crop, (x1, y1, x2, y2)


def normalize_to_box(xy: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Continuous pixel joints (..., 2) -> coordinates normalized to the box."""
    x1, y1, x2, y2 = box
    uv: np.ndarray = (xy - np.array([x1, y1])) / np.array([x2 - x1, y2 - y1])
    return uv


def denormalize_from_box(uv: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Normalized joints (..., 2) -> continuous pixel coordinates of the image."""
    x1, y1, x2, y2 = box
    xy: np.ndarray = uv * np.array([x2 - x1, y2 - y1]) + np.array([x1, y1])
    return xy


def flip_normalized(uv: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mirror normalized joints (14, 2) horizontally: u -> 1 - u and swap left/right (also in ``arrays``)."""
    perm = flip_permutation()
    out = uv[perm].copy()
    out[:, 0] = 1.0 - out[:, 0]
    return (out, *(a[perm] for a in arrays))


@dataclass(frozen=True)
class AugmentConfig:
    """Random person-box jitter (relative to the base box), rotation, flip and photometric ranges."""

    scale: tuple[float, float] = (0.8, 1.25)
    aspect: float = 0.15
    shift: float = 0.08
    rotate_deg: float = 30.0
    rotate_prob: float = 0.6
    flip_prob: float = 0.5
    color: float = 0.25


def augment_params(rng: np.random.Generator, box: Box, cfg: AugmentConfig) -> dict[str, float | bool]:
    """Draw one augmented (possibly rotated) box: centre, size, angle (radians) and flip."""
    x1, y1, x2, y2 = box
    s = math.exp(rng.uniform(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    a = math.exp(rng.uniform(-cfg.aspect, cfg.aspect))
    w, h = (x2 - x1) * s * a, (y2 - y1) * s / a
    cx = (x1 + x2) / 2 + rng.uniform(-cfg.shift, cfg.shift) * (x2 - x1)
    cy = (y1 + y2) / 2 + rng.uniform(-cfg.shift, cfg.shift) * (y2 - y1)
    theta = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if rng.random() < cfg.rotate_prob else 0.0
    return {"cx": cx, "cy": cy, "w": w, "h": h, "theta": theta, "flip": bool(rng.random() < cfg.flip_prob)}


def warp_crop(img: Image.Image, p: dict[str, float | bool], size: int) -> Image.Image:
    """Sample the rotated box ``p`` into a ``size`` x ``size`` image (mirrored when ``p['flip']``)."""
    c, s = math.cos(float(p["theta"])), math.sin(float(p["theta"]))
    w = float(p["w"]) * (-1.0 if p["flip"] else 1.0)
    h = float(p["h"])
    coeffs = (
        c * w / size,
        -s * h / size,
        float(p["cx"]) - c * w / 2 + s * h / 2,
        s * w / size,
        c * h / size,
        float(p["cy"]) - s * w / 2 - c * h / 2,
    )
    return img.convert("RGB").transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)


def warp_joints(xy: np.ndarray, p: dict[str, float | bool]) -> np.ndarray:
    """Continuous pixel joints -> normalized coordinates in the (unflipped) rotated box ``p``."""
    c, s = math.cos(float(p["theta"])), math.sin(float(p["theta"]))
    d = xy - np.array([float(p["cx"]), float(p["cy"])])
    local_x = c * d[:, 0] + s * d[:, 1]
    local_y = -s * d[:, 0] + c * d[:, 1]
    return np.stack([local_x / float(p["w"]) + 0.5, local_y / float(p["h"]) + 0.5], axis=1)


def color_jitter(arr: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness / contrast / saturation jitter on a float (H, W, 3) image in [0, 1]."""
    if strength <= 0:
        return arr
    arr = arr * rng.uniform(1 - strength, 1 + strength)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    gray = arr.mean(axis=2, keepdims=True)
    arr = (arr - gray) * rng.uniform(1 - strength, 1 + strength) + gray
    out: np.ndarray = np.clip(arr, 0.0, 1.0)
    return out


def make_training_example(
    sample: PoseSample, rng: np.random.Generator, size: int, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image (3, S, S), joints (14, 2) normalized, coordinate mask (14,), visibility target (14,))."""
    p = augment_params(rng, sample.box, cfg)
    with Image.open(sample.path) as im:
        crop = warp_crop(im, p, size)
    uv = warp_joints(sample.joints, p)
    mask, vis = sample.annotated.copy(), sample.visible.copy()
    if p["flip"]:
        uv, mask, vis = flip_normalized(uv, mask, vis)
    inside = np.all((uv >= 0.0) & (uv <= 1.0), axis=1)
    arr = color_jitter(np.asarray(crop, dtype=np.float32) / 255.0, rng, cfg.color)
    img = ((arr - MEAN) / STD).transpose(2, 0, 1)
    return (
        np.ascontiguousarray(img, dtype=np.float32),
        uv.astype(np.float32),
        mask.astype(np.float32),
        (vis & inside & mask).astype(np.float32),
    )
