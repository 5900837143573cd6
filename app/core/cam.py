"""Class Activation Maps and the boxes derived from them (numpy only).

With ``V`` the last conv volume ``(K, R, C)`` and ``W`` the dense weights ``(classes, K)``::

    M_y(r, c) = sum_k W[y, k] * V[k, r, c]          S_y = mean_rc M_y + b[y]   (= the logit)

A map is resampled bilinearly (half-pixel centres, as ``align_corners=False``) at the centres of
the output pixels, normalized to [0, 1], thresholded (default 20 %), and the box encloses one
connected region of the thresholded map (8-connectivity):

* ``peak`` (default): the region that holds the map's maximum.  Level sets are nested, so a
  higher threshold can only shrink this region: the box never grows with the threshold.
* ``largest``: the region with the most pixels (the WSOL-benchmark convention; usually the same
  region, but it may jump to another blob when the threshold changes).
* ``all``: every pixel above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from app.core.boxes import FloatArray, mask_to_xyxy
from app.core.regions import label_regions

F32 = npt.NDArray[np.float32]


class CamTta(StrEnum):
    """Test-time augmentation of /cam: the network's volume and logits averaged over views of the image."""

    none = "none"
    flip = "flip"  # the image and its mirror; the mirror's volume is mirrored back before averaging


def flip_average(features: npt.ArrayLike, mirrored: npt.ArrayLike) -> F32:
    """The mean of a volume ``(K, R, C)`` and the volume of the mirrored image, mirrored back (its columns
    reversed).  As a CAM is linear in the volume, the CAM of the mean is the mean of the two CAMs."""
    v = np.asarray(features, dtype=np.float32)
    m = np.asarray(mirrored, dtype=np.float32)
    if v.shape != m.shape or v.ndim != 3:
        raise ValueError(f"two volumes (K, R, C) of one shape, got {v.shape} and {m.shape}")
    out: F32 = (v + m[:, :, ::-1]) / np.float32(2.0)
    return out


class CamNorm(StrEnum):
    """How a map is brought to [0, 1] before thresholding."""

    minmax = "minmax"  # (M - min) / (max - min): the threshold is a fraction of the map's range
    max = "max"  # M / max, negatives clipped to 0: the threshold is a fraction of the peak value


class CamRegion(StrEnum):
    """Which thresholded pixels the box encloses."""

    peak = "peak"
    largest = "largest"
    all = "all"


def class_activation_maps(features: npt.ArrayLike, weight: npt.ArrayLike, classes: npt.ArrayLike) -> F32:
    """``M[i] = sum_k W[classes[i], k] V[k]``: features ``(K, R, C)``, weight ``(Y, K)`` -> ``(n, R, C)``."""
    v = np.asarray(features, dtype=np.float32)
    w = np.asarray(weight, dtype=np.float32)
    idx = np.asarray(classes, dtype=np.int64).reshape(-1)
    if v.ndim != 3 or w.ndim != 2 or w.shape[1] != v.shape[0]:
        raise ValueError(f"features (K, R, C) and weight (Y, K) do not match: {v.shape} vs {w.shape}")
    k, r, c = v.shape
    maps: F32 = (w[idx] @ v.reshape(k, r * c)).reshape(idx.size, r, c)
    return maps


def cam_scores(maps: npt.ArrayLike, bias: npt.ArrayLike) -> FloatArray:
    """``S = mean_rc M + b``, which equals the logits of a GAP -> dense network.  ``(n, R, C)`` -> ``(n,)``."""
    m = np.asarray(maps, dtype=np.float64)
    return np.asarray(m.mean(axis=(-2, -1)) + np.asarray(bias, dtype=np.float64))


def bilinear_weights(n_in: int, positions: npt.ArrayLike) -> FloatArray:
    """Interpolation matrix ``(len(positions), n_in)`` sampling a 1-D signal of ``n_in`` cells at
    continuous positions given in cell units (cell ``i`` spans ``[i, i+1)``, its centre is ``i + .5``).
    Positions beyond the outer centres take the edge value (as ``torch`` / ``align_corners=False``)."""
    if n_in < 1:
        raise ValueError("n_in must be >= 1")
    src = np.clip(np.asarray(positions, dtype=np.float64) - 0.5, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    mat = np.zeros((src.size, n_in), dtype=np.float64)
    rows = np.arange(src.size)
    np.add.at(mat, (rows, lo), 1.0 - frac)
    np.add.at(mat, (rows, hi), frac)
    return mat


@dataclass(frozen=True)
class Resampler:
    """Bilinear sampling of ``(R, C)`` grids at the outer product of fixed row and column positions: the
    interpolation matrices are built once, then applied to every map of a request."""

    rows: FloatArray  # (len(row_pos), R)
    cols: FloatArray  # (len(col_pos), C)

    @classmethod
    def at(cls, grid_shape: tuple[int, int], row_pos: npt.ArrayLike, col_pos: npt.ArrayLike) -> Resampler:
        return cls(bilinear_weights(grid_shape[0], row_pos), bilinear_weights(grid_shape[1], col_pos))

    def __call__(self, grid: npt.ArrayLike) -> FloatArray:
        return np.asarray(self.rows @ np.asarray(grid, dtype=np.float64) @ self.cols.T)


def resample(grid: npt.ArrayLike, row_pos: npt.ArrayLike, col_pos: npt.ArrayLike) -> FloatArray:
    """Bilinear samples of a 2-D grid ``(R, C)`` at the outer product of row and column positions."""
    g = np.asarray(grid, dtype=np.float64)
    return Resampler.at((g.shape[0], g.shape[1]), row_pos, col_pos)(g)


def normalize_map(m: npt.ArrayLike, method: CamNorm = CamNorm.minmax) -> FloatArray:
    """Map to [0, 1]; a constant map (or, for ``max``, one with no positive value) becomes all ones."""
    a = np.asarray(m, dtype=np.float64)
    if method is CamNorm.minmax:
        lo, hi = float(a.min()), float(a.max())
        return np.ones_like(a) if hi - lo <= 1e-12 * max(1.0, abs(hi)) else (a - lo) / (hi - lo)
    hi = float(a.max())
    return np.ones_like(a) if hi <= 0 else np.clip(a / hi, 0.0, 1.0)


def region_mask(norm: npt.ArrayLike, threshold: float, region: CamRegion = CamRegion.peak) -> npt.NDArray[np.bool_]:
    """Pixels of a [0, 1] map at or above ``threshold``, restricted to one connected region."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    a = np.asarray(norm, dtype=np.float64)
    mask = a >= min(threshold, float(a.max()))  # a threshold above the peak keeps the peak itself
    if region is CamRegion.all:
        return mask
    labels, n = label_regions(mask)
    if region is CamRegion.peak:
        peak = np.unravel_index(int(np.argmax(a)), a.shape)
        keep = int(labels[peak])
    else:
        keep = int(np.argmax(np.bincount(labels.ravel(), minlength=n + 1)[1:])) + 1
    out: npt.NDArray[np.bool_] = labels == keep
    return out


def threshold_box(norm: npt.ArrayLike, threshold: float = 0.2, region: CamRegion = CamRegion.peak) -> FloatArray:
    """xyxy box (in cells of ``norm``) enclosing the chosen region at or above ``threshold``."""
    return mask_to_xyxy(region_mask(norm, threshold, region))
