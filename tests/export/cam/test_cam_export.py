"""Export path for a user's own GAP classifier, checked against torch and an independent CAM (torchcam)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from torch import nn  # noqa: E402

from app.config import Settings  # noqa: E402
from app.core.cam import class_activation_maps  # noqa: E402
from app.registry import Registry  # noqa: E402
from app.sidecar import Task  # noqa: E402
from export.cam.cli import export_cam_model  # noqa: E402
from export.common.onnx_export import ExportVerificationError, GapClassifier, cam_identity_error, verify_wrapper  # noqa: E402
from tests.app.core.test_cam import upsample  # noqa: E402

LABELS = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(5)]
NORM = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}


class TinyNet(nn.Module):
    """A torchvision-style classifier: ``layer2`` is the last conv block, then avgpool -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.layer2(self.layer1(x))), 1))


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_export_user_model_end_to_end(net: TinyNet, x: torch.Tensor, tmp_path: Path) -> None:
    out = tmp_path / "mine.onnx"
    side = export_cam_model(net, "layer2", "fc", out, 32, LABELS, NORM, "mine", {"weights": "random"}, samples=x)
    meta = json.loads(side.read_text())
    assert meta["task"] == "cam" and meta["file"] == "mine.onnx" and len(meta["sha256"]) == 64
    assert set(meta["outputs"]) == {"features", "pooled", "logits", "cam_weight", "cam_bias"}
    assert meta["verification"]["cam_identity_max_abs"] < 1e-4

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out))
    feats, pooled, logits, w, b = sess.run(None, {"image": x.numpy()})
    assert feats.shape == (3, 16, 8, 8) and pooled.shape == (3, 16) and logits.shape == (3, 5)
    with torch.no_grad():
        np.testing.assert_allclose(logits, net(x).numpy(), atol=1e-5)
    assert cam_identity_error(feats, w, b, logits) < 1e-4
    # dynamic batch axis
    assert sess.run(["logits"], {"image": x[:1].numpy()})[0].shape == (1, 5)

    # the sidecar is the whole contract: the service loads the file from it alone
    reg = Registry.load(Settings(models_dir=tmp_path))
    assert reg.get(Task.cam, None).name == "mine"


def test_cam_matches_torchcam(net: TinyNet, x: torch.Tensor, tmp_path: Path) -> None:
    """Our numpy CAM on the ONNX outputs equals torchcam's CAM on the PyTorch model."""
    tc = pytest.importorskip("torchcam.methods")
    out = tmp_path / "mine.onnx"
    export_cam_model(net, "layer2", "fc", out, 32, LABELS, NORM, "mine", {}, samples=x)
    import onnxruntime as ort

    feats, w = ort.InferenceSession(str(out)).run(["features", "cam_weight"], {"image": x.numpy()})
    extractor = tc.CAM(net, target_layer="layer2", fc_layer="fc")
    with torch.no_grad():
        scores = net(x)
    for cls in range(5):
        theirs = extractor([cls] * len(x), scores, normalized=False)[0].numpy()
        for i in range(len(x)):
            ours = class_activation_maps(feats[i], w, [cls])[0]
            np.testing.assert_allclose(ours, theirs[i], rtol=1e-4, atol=1e-5)
    extractor.remove_hooks()


def test_upsample_matches_torch_bilinear() -> None:
    grid = np.random.default_rng(0).normal(size=(7, 5))
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(grid)[None, None], size=(33, 21), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(upsample(grid, 33, 21), theirs[0, 0].numpy(), atol=1e-12)


def test_wrong_layers_fail_loudly(net: TinyNet, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="no submodule"):
        GapClassifier(net, "layer9", "fc")
    with pytest.raises(ValueError, match=r"expected nn\.Linear"):
        GapClassifier(net, "layer2", "layer1")
    # layer1 is a conv volume, but GAP(layer1) -> fc is not this network's tail
    with pytest.raises((ExportVerificationError, RuntimeError)):
        verify_wrapper(GapClassifier(net, "layer1", "fc"), x)


def test_default_model_is_efficientnet_lite0() -> None:
    """The bundled sidecar says what was exported and what the export verified."""
    side = Path(__file__).resolve().parents[3] / "models" / "efficientnet_lite0_imagenet.json"
    if not side.exists():
        pytest.skip("bundled CAM model not exported")
    meta = json.loads(side.read_text())
    assert meta["input"]["height"] % 32 == 0 and meta["normalization"]["mean"] == [0.5] * 3
    assert len(meta["labels"]) == 1000 and meta["labels"][281]["id"] == "n02123045"
    assert meta["verification"]["cam_identity_max_abs"] < 1e-3
