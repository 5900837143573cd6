"""The numpy of the class-map methods (app.core.cam_methods): against direct loops written from each paper."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.cam import bilinear_weights, class_activation_maps
from app.core.cam_methods import (
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

RNG = np.random.default_rng(0)
V = np.maximum(RNG.normal(size=(6, 4, 5)), 0).astype(np.float32)
W = RNG.normal(size=(3, 6)).astype(np.float32)
B = RNG.normal(size=3).astype(np.float32)


def test_weighted_maps_is_cam_for_the_dense_weights() -> None:
    np.testing.assert_allclose(weighted_maps(V, W[[2, 0]]), class_activation_maps(V, W, [2, 0]), rtol=1e-6)
    with pytest.raises(ValueError):
        weighted_maps(V, W[:, :5])


def test_ablation_of_a_dense_head_is_w_times_pooled() -> None:
    p = V.mean(axis=(1, 2))
    y = W @ p + B
    ablated = ablated_pooled(p) @ W.T + B
    w = ablation_weights(y, ablated, [0, 2])
    np.testing.assert_allclose(w, (W[[0, 2]] * p) / np.abs(y[[0, 2]])[:, None], rtol=1e-4, atol=1e-5)
    vol = ablated_volumes(V, [1, 4])
    assert not vol[0, 1].any() and np.array_equal(vol[0, 0], V[0]) and not vol[1, 4].any()
    np.testing.assert_allclose(vol.mean(axis=(2, 3)), ablated_pooled(p)[[1, 4]], atol=1e-6)


def test_recipro_masks_one_cell_at_a_time() -> None:
    _, r, c = V.shape
    pooled = recipro_pooled(V)
    vols = recipro_volumes(V, np.arange(r * c))
    for cell in range(r * c):
        i, j = divmod(cell, c)
        mask = np.zeros((r, c), dtype=np.float32)
        mask[i, j] = 1
        np.testing.assert_allclose(vols[cell], V * mask)
        np.testing.assert_allclose(pooled[cell], (V * mask).mean(axis=(1, 2)), rtol=1e-6)
    logits = pooled @ W.T + B
    maps = recipro_maps(logits, [1], (r, c))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(maps[0], probs[:, 1].reshape(r, c), rtol=1e-6)


def test_score_masks_normalize_then_upsample_and_weights_are_a_softmax() -> None:
    rows = bilinear_weights(4, (np.arange(16) + 0.5) * 4 / 16)
    cols = bilinear_weights(5, (np.arange(20) + 0.5) * 5 / 20)
    order = channel_order(V.mean(axis=(1, 2)))
    assert list(order) == list(np.argsort(-V.mean(axis=(1, 2)), kind="stable"))
    masks = score_masks(V, order[:3], rows, cols)
    assert masks.shape == (3, 16, 20) and masks.min() >= 0 and masks.max() <= 1
    a = V[order[0]]
    norm = (a - a.min()) / (a.max() - a.min() + 1e-8)
    np.testing.assert_allclose(masks[0], rows @ norm @ cols.T, rtol=1e-5, atol=1e-6)
    z = RNG.normal(size=(3, 3))
    w = score_weights(z, B, [2])
    e = np.exp(z[:, 2] - B[2])
    np.testing.assert_allclose(w[0], e / e.sum(), rtol=1e-9)


def test_eigencam_is_the_first_component_signed_by_the_mean_map() -> None:
    k, r, c = V.shape
    x = V.reshape(k, -1).T.astype(np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x)
    proj = (x @ vt[0]).reshape(r, c)
    got = eigencam_map(V)
    assert np.allclose(got, proj, atol=1e-5) or np.allclose(got, -proj, atol=1e-5)
    assert np.corrcoef(got.ravel(), V.mean(axis=0).ravel())[0, 1] > 0
    np.testing.assert_allclose(eigencam_map(-V), -got, atol=1e-5)  # the sign follows the volume's mean map
    assert not eigencam_map(np.ones((3, 2, 2), dtype=np.float32)).any()
