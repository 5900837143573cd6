"""The /cam methods on models nobody tuned for, checked numerically against torchcam 0.5.0 (GradCAM, ScoreCAM) and,
where torchcam has none (Ablation-CAM, Recipro-CAM, EigenCAM), against references written here in torch from the
papers - on the PyTorch model, while the service computes its maps from the exported ONNX files with numpy.

Tolerances: torchcam applies a ReLU to Grad-CAM and Score-CAM maps and divides Grad-CAM's weights by R·C; the
service keeps the raw map (``norm=max`` is that ReLU) and drops the constant, so ``relu(ours) / (R C)`` must equal
torchcam's ``normalized=False`` map to 1e-4 (Grad-CAM) / 1e-3 (Score-CAM: 16 masked forward passes in float32
through two runtimes); the references to 1e-4 - relative to each value, and (atol) to the map's largest value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
tc = pytest.importorskip("torchcam.methods")

from torch import nn  # noqa: E402

from app.config import Settings  # noqa: E402
from app.core.cam_methods import CamMethod  # noqa: E402
from app.factory import create_app  # noqa: E402
from app.model import CamModel  # noqa: E402
from app.registry import Registry  # noqa: E402
from app.services.cam import class_maps  # noqa: E402
from app.services.common import Deadline  # noqa: E402
from export.__main__ import main  # noqa: E402
from export.cam.torch_split import export_split_model  # noqa: E402
from tests.conftest import encode, files, noise_image  # noqa: E402
from tests.export.cam import onnx_builders as builders  # noqa: E402

LABELS = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(builders.CLASSES)]
NORM = {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}
FORWARD_ONLY = ["ablationcam", "reciprocam", "scorecam", "eigencam"]


class MobileNetV3Like(nn.Module):
    """torchvision's MobileNetV3 layout: ``features`` -> ``avgpool`` -> flatten -> ``classifier`` (Linear ->
    Hardswish -> Dropout -> Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.Hardswish(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.Hardswish(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(16, 12), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(12, builders.CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        return out


def mobilenetv3_like() -> nn.Module:
    torch.manual_seed(0)
    return MobileNetV3Like().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``onnx-cam`` on the MobileNetV3-style (split) and ResNet-style (dense) builders, and the PyTorch split export."""
    d = tmp_path_factory.mktemp("methods_torch")
    for kind, builder in (("mbv3", builders.mobilenetv3_style), ("resnet", builders.resnet_style)):
        main(["onnx-cam", str(builder(d / f"{kind}_src.onnx")), "--out", str(d / "models" / f"{kind}.onnx")])
    export_split_model(
        mobilenetv3_like(),
        "features",
        "classifier",
        d / "models" / "torchsplit.onnx",
        32,
        LABELS,
        NORM,
        "torchsplit",
        {"weights": "random"},
        torch.randn(3, 3, 32, 32),
    )
    return d / "models"


def close(ours: np.ndarray, theirs: np.ndarray, rtol: float) -> None:
    """Equal to ``rtol``, relative to each value and (atol) to the largest of ``theirs``."""
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * float(np.abs(theirs).max()))


def _served(models_dir: Path, name: str) -> CamModel:
    model = Registry.load(Settings(models_dir=models_dir, models=[name])).models[name]
    assert isinstance(model, CamModel)
    return model


def _ours(model: CamModel, x: torch.Tensor, method: CamMethod, cls: int) -> np.ndarray:
    maps = []
    for xi in x.numpy():
        out = model.run(xi[None], ["features", "logits"])
        found = class_maps(
            model, method, xi[None], out["features"][0], out["logits"][0], [cls], Deadline.start(60), 1024
        )
        maps.append(found.maps[0])
    return np.stack(maps)


def _hooked(
    net: nn.Module, layer: str, x: torch.Tensor, edit: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the layer's output, the logits), the output replaced by ``edit(output)`` when given."""
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        seen.append(out)
        return edit(out) if edit is not None else out

    handle = net.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        handle.remove()
    return seen[-1], logits


CASES = {  # model name -> (torch module, GAP-input layer, the part after the GAP input as a function of V)
    "mbv3": (lambda: builders._torch_module("mobilenetv3"), "1.0", lambda net, v: net[1][1:](v)),
    "resnet": (lambda: builders._torch_module("resnet"), "1.1", lambda net, v: net[1][2:](v)),
    "torchsplit": (mobilenetv3_like, "features", lambda net, v: net.classifier(net.avgpool(v).flatten(1))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcam_and_scorecam_match_torchcam(name: str, exported: Path, x: torch.Tensor) -> None:
    make, layer, _ = CASES[name]
    net, model = make(), _served(exported, name)
    v, _ = _hooked(net, layer, x)
    rc = v.shape[2] * v.shape[3]
    positive = 0
    for cls in range(builders.CLASSES):
        with tc.GradCAM(net, target_layer=layer) as extractor:
            theirs = extractor(class_idx=cls, scores=net(x), normalized=False)[0].detach().numpy()
        ours = np.maximum(_ours(model, x, CamMethod.gradcam, cls), 0) / rc
        close(ours, theirs, 1e-4)
        positive += int(theirs.max() > 0)
    assert positive >= 2  # not all ReLU'd away
    for cls in (0, 3):
        for i in range(len(x)):
            with tc.ScoreCAM(net, target_layer=layer, batch_size=32, input_shape=(3, 32, 32)) as extractor:
                with torch.no_grad():
                    net(x[i : i + 1])
                theirs = extractor(class_idx=cls, normalized=False)[0][0].numpy()
            ours = np.maximum(_ours(model, x[i : i + 1], CamMethod.scorecam, cls)[0], 0)
            close(ours, theirs, 1e-3)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_only_methods_match_references_from_the_papers(name: str, exported: Path, x: torch.Tensor) -> None:
    make, layer, rest = CASES[name]
    net, model = make(), _served(exported, name)
    v, logits = _hooked(net, layer, x)
    n, k, r, c = v.shape
    for cls in (1, 4):
        # Ablation-CAM: w_k = (y - y_k) / |y|, y_k the logit with channel k of the layer's output zeroed
        ablated = torch.stack(
            [
                _hooked(net, layer, x, lambda o, k=j: o.index_fill(1, torch.tensor([k]), 0.0))[1][:, cls]
                for j in range(k)
            ],
            1,
        )
        w = (logits[:, cls : cls + 1] - ablated) / logits[:, cls : cls + 1].abs()
        want = torch.einsum("nk,nkrc->nrc", w, v).numpy()
        close(_ours(model, x, CamMethod.ablationcam, cls), want, 1e-4)
        # Recipro-CAM: the softmax score of the rest of the network on the volume masked to each cell
        masks = torch.eye(r * c).reshape(r * c, 1, r, c)
        with torch.no_grad():
            probs = torch.stack([torch.softmax(rest(net, v[i : i + 1] * masks), 1)[:, cls] for i in range(n)])
        close(_ours(model, x, CamMethod.reciprocam, cls), probs.reshape(n, r, c).numpy(), 1e-4)
    # EigenCAM: the centred (RC, K) volume on its first right singular vector, signed by the mean map
    for i in range(n):
        a = v[i].reshape(k, -1).T.double()
        a = a - a.mean(0)
        proj = a @ torch.linalg.svd(a, full_matrices=False).Vh[0]
        mean_map = v[i].mean(0).reshape(-1).double()
        if torch.dot(proj - proj.mean(), mean_map - mean_map.mean()) < 0:
            proj = -proj
        got = _ours(model, x[i : i + 1], CamMethod.eigencam, 0)[0]
        close(got, proj.reshape(r, c).numpy(), 1e-4)


def test_dense_head_gradient_is_the_cam_weights(exported: Path, x: torch.Tensor) -> None:
    model = _served(exported, "resnet")
    assert model.methods[0] is CamMethod.cam and model.head is None
    for cls in range(builders.CLASSES):
        np.testing.assert_array_equal(_ours(model, x, CamMethod.gradcam, cls), _ours(model, x, CamMethod.cam, cls))


def test_split_exports_say_what_they_wrote(exported: Path) -> None:
    for name in ("mbv3", "torchsplit"):
        meta = json.loads((exported / f"{name}.json").read_text())
        head = meta["head"]
        assert head["file"] == f"{name}.head.onnx" and head["pooled_head"] is True and head["gradient"] == "gradient"
        assert (exported / head["file"]).is_file() and len(head["sha256"]) == 64
        assert set(meta["outputs"]) == {"features", "pooled", "logits"}
        ver = meta["verification"]
        assert (
            ver["max_abs_diff_head_of_features_vs_logits"] < 1e-5
            and ver["max_abs_diff_gradient_vs_central_differences"] < 1e-3
        )
    torch_ver = json.loads((exported / "torchsplit.json").read_text())["verification"]["torch"]
    assert torch_ver["max_abs_diff_gradient_vs_jacrev"] < 1e-5 and torch_ver["max_abs_diff_logits"] < 1e-4


@pytest.mark.anyio
async def test_split_models_are_served_and_cam_is_refused(exported: Path) -> None:
    app = create_app(Settings(models_dir=exported, auth=False, log_json=True, intra_op_threads=1))
    image = encode(noise_image(48, 40, seed=3))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        listed = {m["name"]: m["cam_methods"] for m in (await client.get("/models")).json()}
        assert listed["mbv3"] == listed["torchsplit"] == ["gradcam", *FORWARD_ONLY]
        assert listed["resnet"] == [m.value for m in CamMethod]
        for name in ("mbv3", "torchsplit"):
            for method in ["gradcam", *FORWARD_ONLY]:
                r = await client.post("/cam", files=files(image), params={"model": name, "method": method})
                assert r.status_code == 200, r.text
                assert r.json()["grid_size"] == [8, 8] and r.json()["method"] == method
            r = await client.post("/cam", files=files(image), params={"model": name, "method": "cam"})
            assert r.status_code == 422 and r.json()["field"] == "method"
            assert "gradcam, ablationcam, reciprocam, scorecam, eigencam" in r.json()["detail"]


def test_export_cam_cli_splits_a_pytorch_head(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))
    out = tmp_path / "m" / "mine.onnx"
    main(
        [
            "cam",
            "--model",
            f"{__name__}:mobilenetv3_like",
            "--feature-layer",
            "features",
            "--head-layer",
            "classifier",
            "--size",
            "32",
            "--labels",
            str(labels),
            "--out",
            str(out),
        ]
    )
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (
        meta["head"]["file"] == "mine.head.onnx"
        and meta["verification"]["torch"]["max_abs_diff_gradient_vs_jacrev"] < 1e-5
    )
    assert _served(out.parent, "mine").methods[0] is CamMethod.gradcam
