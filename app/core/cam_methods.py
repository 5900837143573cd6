"""The class-map methods of /cam beyond CAM, as numpy on the model's outputs (no framework at serve time).

``V`` is the volume that enters global average pooling, ``(K, R, C)``; ``p = mean_rc V`` the pooled vector;
``h`` the head, ``logits = h(p)``.  Every method gives one raw map per class on the ``R x C`` grid; the
threshold, normalization, region and box rules (:mod:`app.core.cam`) are the same for all of them.

* ``cam`` - ``M_y = sum_k W[y, k] V[k]`` (Zhou et al. 2016); only for a head that is one dense layer.
* ``gradcam`` - ``M_y = sum_k J[y, k] V[k]`` with ``J = d logits / d p`` (Selvaraju et al. 2017).  As the
  head starts with GAP, ``d y / d V[k, r, c] = J[y, k] / (R C)``: Grad-CAM's weights are ``J / (R C)``; the
  constant ``R C`` is dropped, so for a dense head ``J = W`` and the map *is* CAM's.
* ``ablationcam`` - ``w_k = (y - y^(k)) / |y|``, ``y^(k)`` the score with channel ``k`` of ``V`` set to zero
  (Desai & Ramaswamy 2020; the paper divides by ``y``: ``|y|`` keeps the map's sign when a logit is negative).
* ``reciprocam`` - ``M_y[r, c] = softmax(h(V * e_rc))[y]``: the head on the volume masked to one cell
  (Byun & Lee 2022, the one-hot mask of the paper's first version).
* ``scorecam`` - ``w_k = softmax_k(f_y(X * U(A_k)) - f_y(X))`` with ``A_k`` channel ``k`` min-max normalized and
  ``U`` bilinear upsampling to the input (Wang et al. 2020, as torchcam computes it); over the channels used.
* ``eigencam`` - the projection of the centred ``(R C, K)`` volume on its first principal component (Muhammad
  & Yeasin 2020); class-agnostic; its sign is chosen so that the map correlates positively with
  ``mean_k V[k]`` (an SVD's sign is arbitrary).

Grad-CAM and Score-CAM (and torchcam) apply a ReLU to the map; here the raw map is kept and ``norm=max``
(``M / max``, negatives at 0) is that ReLU followed by max-normalization.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
_EPS = 1e-8  # torchcam's, in its min-max normalization


class CamMethod(StrEnum):
    """How the class maps of /cam are computed (see the module's docstring)."""

    cam = "cam"
    gradcam = "gradcam"
    ablationcam = "ablationcam"
    reciprocam = "reciprocam"
    scorecam = "scorecam"
    eigencam = "eigencam"


def weighted_maps(features: npt.ArrayLike, weights: npt.ArrayLike) -> F32:
    """``M[i] = sum_k weights[i, k] V[k]``: features ``(K, R, C)``, weights ``(n, K)`` -> ``(n, R, C)``."""
    v = np.asarray(features, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    if v.ndim != 3 or w.ndim != 2 or w.shape[1] != v.shape[0]:
        raise ValueError(f"features (K, R, C) and weights (n, K) do not match: {v.shape} vs {w.shape}")
    k, r, c = v.shape
    maps: F32 = (w @ v.reshape(k, r * c)).reshape(w.shape[0], r, c)
    return maps


def ablated_pooled(pooled: npt.ArrayLike) -> F32:
    """``(K, K)``: row ``k`` is the pooled vector with channel ``k`` zeroed (the mean of the ablated volume)."""
    p = np.asarray(pooled, dtype=np.float32).reshape(-1)
    out: F32 = np.repeat(p[None], p.size, axis=0)
    np.fill_diagonal(out, 0.0)
    return out


def ablated_volumes(features: npt.ArrayLike, channels: npt.ArrayLike) -> F32:
    """``(len(channels), K, R, C)``: the volume with each of ``channels`` zeroed in turn."""
    v = np.asarray(features, dtype=np.float32)
    idx = np.asarray(channels, dtype=np.int64).reshape(-1)
    out: F32 = np.repeat(v[None], idx.size, axis=0)
    out[np.arange(idx.size), idx] = 0.0
    return out


def ablation_weights(logits: npt.ArrayLike, ablated: npt.ArrayLike, classes: npt.ArrayLike) -> F64:
    """``(n, K)``: ``(y - y^(k)) / |y|`` for each class, from the logits ``(Y,)`` and the ablated ones ``(K, Y)``."""
    y = np.asarray(logits, dtype=np.float64).reshape(-1)
    a = np.asarray(ablated, dtype=np.float64)
    idx = np.asarray(classes, dtype=np.int64).reshape(-1)
    scale = np.maximum(np.abs(y[idx]), _EPS)
    out: F64 = (y[idx][:, None] - a[:, idx].T) / scale[:, None]
    return out


def recipro_pooled(features: npt.ArrayLike) -> F32:
    """``(R C, K)``: the pooled vector of the volume masked to each cell, row-major (``V[:, r, c] / (R C)``)."""
    v = np.asarray(features, dtype=np.float32)
    k, r, c = v.shape
    out: F32 = np.ascontiguousarray(v.reshape(k, r * c).T / np.float32(r * c))
    return out


def recipro_volumes(features: npt.ArrayLike, cells: npt.ArrayLike) -> F32:
    """``(len(cells), K, R, C)``: the volume masked to each of ``cells`` (flat row-major indices)."""
    v = np.asarray(features, dtype=np.float32)
    k, r, c = v.shape
    idx = np.asarray(cells, dtype=np.int64).reshape(-1)
    out = np.zeros((idx.size, k, r * c), dtype=np.float32)
    out[np.arange(idx.size), :, idx] = v.reshape(k, r * c)[:, idx].T
    return out.reshape(idx.size, k, r, c)


def softmax_rows(z: npt.ArrayLike) -> F64:
    a = np.asarray(z, dtype=np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    out: F64 = e / e.sum(axis=-1, keepdims=True)
    return out


def recipro_maps(cell_logits: npt.ArrayLike, classes: npt.ArrayLike, grid: tuple[int, int]) -> F32:
    """``(n, R, C)``: the softmax probability of each class when the head sees one cell, from ``(R C, Y)``."""
    probs = softmax_rows(cell_logits)
    idx = np.asarray(classes, dtype=np.int64).reshape(-1)
    return np.ascontiguousarray(probs[:, idx].T.reshape(idx.size, *grid), dtype=np.float32)


def channel_order(pooled: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Channels by decreasing mean activation (the ones Score-CAM tries first when it cannot try them all)."""
    p = np.asarray(pooled, dtype=np.float64).reshape(-1)
    return np.argsort(-p, kind="stable").astype(np.int64)


def score_masks(features: npt.ArrayLike, channels: npt.ArrayLike, rows: npt.ArrayLike, cols: npt.ArrayLike) -> F32:
    """``(m, H, W)``: each channel of ``channels`` min-max normalized on its grid (``(a - min) / (max - min +
    1e-8)``, as torchcam), then upsampled with the interpolation matrices ``rows`` ``(H, R)``, ``cols`` ``(W, C)``."""
    v = np.asarray(features, dtype=np.float64)[np.asarray(channels, dtype=np.int64).reshape(-1)]
    lo = v.min(axis=(1, 2), keepdims=True)
    norm = (v - lo) / ((v.max(axis=(1, 2), keepdims=True) - lo) + _EPS)
    up = np.einsum("hr,mrc,wc->mhw", np.asarray(rows, dtype=np.float64), norm, np.asarray(cols, dtype=np.float64))
    return np.ascontiguousarray(up, dtype=np.float32)


def score_weights(masked_logits: npt.ArrayLike, logits: npt.ArrayLike, classes: npt.ArrayLike) -> F64:
    """``(n, m)``: softmax over the ``m`` masks of each class's logit gain ``f_y(X * U(A_k)) - f_y(X)``."""
    z = np.asarray(masked_logits, dtype=np.float64)
    y = np.asarray(logits, dtype=np.float64).reshape(-1)
    idx = np.asarray(classes, dtype=np.int64).reshape(-1)
    return softmax_rows((z[:, idx] - y[idx]).T)


def eigencam_map(features: npt.ArrayLike) -> F32:
    """``(R, C)``: the centred volume projected on its first principal component, signed to correlate positively
    with the mean over channels."""
    v = np.asarray(features, dtype=np.float64)
    k, r, c = v.shape
    x = v.reshape(k, r * c).T
    x = x - x.mean(axis=0)
    if not np.any(x):
        return np.zeros((r, c), dtype=np.float32)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[0]
    ref = v.mean(axis=0).reshape(-1)
    if float(np.dot(proj - proj.mean(), ref - ref.mean())) < 0:
        proj = -proj
    return np.ascontiguousarray(proj.reshape(r, c), dtype=np.float32)
