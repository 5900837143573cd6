"""``export.common``: the one IoU (numpy and torch agree), the one file digest, the one onnxruntime runner."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.common.boxes import box_iou, overlap  # noqa: E402
from export.common.hashing import sha256_file  # noqa: E402


def _boxes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    return np.stack([r, c, rng.uniform(0, 1 - r), rng.uniform(0, 1 - c)], 1).astype(np.float32)


def test_box_iou_numpy_is_float64_and_matches_tensors() -> None:
    a, b = _boxes(1000, 0), _boxes(1000, 1)
    ours = box_iou(a, b)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64 and ours.shape == (1000,)
    t = box_iou(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), ours, rtol=1e-4, atol=1e-5)
    assert np.all((ours >= 0) & (ours <= 1)) and np.array_equal(box_iou(a, a), np.ones(1000))
    assert box_iou(a[None, :3], b[None, :3]).shape == (1, 3)  # any leading shape


def test_overlap_areas() -> None:
    o = overlap(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert o.inter.item() == pytest.approx(0.0625)
    assert o.union.item() == pytest.approx(0.4375)
    assert o.hull.item() == pytest.approx(0.5625)


def test_sha256_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * 2**20 + 17)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_onnx_predict_concatenates_batches(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from export.common.onnx_export import export_onnx
    from export.common.onnx_run import onnx_predict

    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))

    path = tmp_path / "two.onnx"
    export_onnx(Two(), ["mean", "max"], (4, 4), path)
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    mean, top = onnx_predict(path, (x[i : i + 2] for i in range(0, 5, 2)), ["mean", "max"], threads=1)
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(top, x.max(axis=(1, 2, 3)))
