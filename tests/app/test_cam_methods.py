"""/cam ``method=``: every method on a dense model and on a split (head file) model, the methods each model lists
in GET /models, 422 naming the supported ones, Score-CAM's mask count, and the head file's load-time checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.core.cam_methods import CamMethod
from app.model import CamModel
from app.registry import Registry
from app.services.cam import class_maps
from app.services.common import Deadline
from tests.conftest import files
from tests.tiny_models import build, build_split

pytestmark = pytest.mark.anyio
ALL = [m.value for m in CamMethod]
SPLIT = ["gradcam", "ablationcam", "reciprocam", "scorecam", "eigencam"]


@pytest.fixture(scope="module")
def methods_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("methods")
    build("cam", d / "dense.onnx", seed=1)
    build_split(d / "split.onnx", seed=2)
    build_split(d / "bad_sha.onnx", seed=3, head_edit={"sha256": "0" * 64})
    build_split(d / "no_head_file.onnx", seed=4, head_edit={"file": "nope.onnx"})
    build_split(d / "other_head.onnx", seed=5, head_seed=99)
    build_split(d / "no_output.onnx", seed=6, head_edit={"gradient": "grad"})
    return d


def test_head_files_are_checked_at_load(methods_dir: Path) -> None:
    registry = Registry.load(Settings(models_dir=methods_dir))
    assert sorted(registry.models) == ["dense", "split"]
    refused = {f: (r.field, r.reason) for f, r in registry.refused.items()}
    assert (
        refused["bad_sha.json"][0] == "head.sha256" and "bad_sha.head.onnx does not match" in refused["bad_sha.json"][1]
    )
    assert refused["no_head_file.json"][0] == "head.file" and "missing" in refused["no_head_file.json"][1]
    assert refused["other_head.json"][0] == "head.file" and "misses the logits" in refused["other_head.json"][1]
    assert refused["no_output.json"][0] == "head.gradient"


async def test_models_list_their_methods_and_each_is_served(
    make_client: Callable[..., Any], methods_dir: Path, jpeg: bytes
) -> None:
    async with make_client(models_dir=methods_dir) as client:
        listed = {m["name"]: m["cam_methods"] for m in (await client.get("/models")).json()}
        assert listed == {"dense": ALL, "split": SPLIT}
        for model, methods in listed.items():
            for method in methods:
                r = await client.post("/cam", files=files(jpeg), params={"model": model, "method": method, "top_k": 2})
                assert r.status_code == 200, (model, method, r.text)
                body = r.json()
                assert body["method"] == method and len(body["classes"]) == 2 and body["grid_size"] == [4, 4]
                assert (body["masks"] is not None) == (method == "scorecam")
        r = await client.post("/cam", files=files(jpeg), params={"model": "split", "method": "cam"})
        assert r.status_code == 422 and r.json()["field"] == "method"
        assert "gradcam, ablationcam, reciprocam, scorecam, eigencam" in r.json()["detail"]
        r = await client.post("/cam", files=files(jpeg), params={"model": "split"})  # its default: gradcam
        assert r.status_code == 200 and r.json()["method"] == "gradcam"
        r = await client.post("/cam", files=files(jpeg), params={"model": "dense", "method": "nope"})
        assert r.status_code == 422


async def test_default_method_is_todays_cam(make_client: Callable[..., Any], methods_dir: Path, jpeg: bytes) -> None:
    async with make_client(models_dir=methods_dir) as client:
        params = {"model": "dense", "top_k": 3, "include_grid": True}
        default = (await client.post("/cam", files=files(jpeg), params=params)).json()
        cam = (await client.post("/cam", files=files(jpeg), params={**params, "method": "cam"})).json()
        grad = (await client.post("/cam", files=files(jpeg), params={**params, "method": "gradcam"})).json()
    assert default["method"] == "cam" and default["classes"] == cam["classes"]
    for c in default["classes"]:
        assert c["cam_score"] == pytest.approx(c["logit"], abs=1e-4)
    # a dense head's gradient is its weights: Grad-CAM's map is CAM's
    for a, b in zip(cam["classes"], grad["classes"], strict=True):
        np.testing.assert_allclose(a["grid"], b["grid"], atol=1e-5)
        assert a["box"] == b["box"]


def _model(methods_dir: Path, name: str) -> CamModel:
    model = Registry.load(Settings(models_dir=methods_dir, models=[name])).models[name]
    assert isinstance(model, CamModel)
    return model


def test_score_cam_is_bounded_by_max_masks_and_time(methods_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(methods_dir, "split")
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    out = model.run(x, ["features", "logits"])
    feats, logits = out["features"][0], out["logits"][0]
    few = class_maps(model, CamMethod.scorecam, x, feats, logits, [0, 1], Deadline.start(30), max_masks=3)
    assert (few.masks, few.masks_total) == (3, 6) and few.maps.shape == (2, 4, 4)
    every = class_maps(model, CamMethod.scorecam, x, feats, logits, [0], Deadline.start(30), max_masks=100)
    assert every.masks == 6
    # runs of 2 masks and a share of the time left too small for a second run: one run, no more
    monkeypatch.setattr("app.services.cam.SCORE_CAM_BATCH", 2)
    monkeypatch.setattr("app.services.cam.SCORE_CAM_SHARE", 1e-9)
    tight = class_maps(model, CamMethod.scorecam, x, feats, logits, [0], Deadline.start(30), max_masks=100)
    assert (tight.masks, tight.masks_total) == (2, 6)


def test_split_head_methods_match_a_direct_computation(methods_dir: Path) -> None:
    """On the split model: ablation and Recipro-CAM through the head file equal the same sums done here in numpy
    with the MLP's own weights (read back from the graph), on pooled vectors and on whole volumes alike."""
    import onnx
    from onnx import numpy_helper

    model = _model(methods_dir, "split")
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model.path)).graph.initializer}

    def head(p: np.ndarray) -> np.ndarray:
        h = np.maximum(p @ weights["w1"].T + weights["b1"], 0)
        out: np.ndarray = h @ weights["w2"].T + weights["b2"]
        return out

    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    out = model.run(x, ["features", "logits"])
    feats, logits = out["features"][0], out["logits"][0]
    k, r, c = feats.shape
    pooled = feats.mean(axis=(1, 2))
    ablated = head(np.where(np.eye(k, dtype=bool), 0.0, pooled[None]))
    want_w = (logits[1] - ablated[:, 1]) / abs(logits[1])
    cells = head(feats.reshape(k, -1).T / (r * c))
    want_r = np.exp(cells - cells.max(1, keepdims=True))
    want_r = (want_r / want_r.sum(1, keepdims=True))[:, 1].reshape(r, c)
    for pooled_head in (True, False):
        assert model.head is not None
        model.head.pooled = pooled_head
        got = class_maps(model, CamMethod.ablationcam, x, feats, logits, [1], Deadline.start(30)).maps[0]
        np.testing.assert_allclose(got, np.einsum("k,krc->rc", want_w, feats), rtol=1e-4, atol=1e-5)
        got = class_maps(model, CamMethod.reciprocam, x, feats, logits, [1], Deadline.start(30)).maps[0]
        np.testing.assert_allclose(got, want_r, rtol=1e-4, atol=1e-6)
    grad = class_maps(model, CamMethod.gradcam, x, feats, logits, [1], Deadline.start(30)).maps[0]
    jac = weights["w2"][1] @ (((pooled @ weights["w1"].T + weights["b1"]) > 0)[:, None] * weights["w1"])
    np.testing.assert_allclose(grad, np.einsum("k,krc->rc", jac, feats), rtol=1e-4, atol=1e-5)


async def test_bundled_model_gives_todays_cam_through_the_new_path(
    make_client: Callable[..., Any], real_models_dir: Path, cat_jpeg: bytes
) -> None:
    """efficientnet_lite0_imagenet: the default method is cam, its grids are ``W[y] . V`` from the model's own
    outputs (as before methods existed), gradcam gives the same maps, and the others answer."""
    name = "efficientnet_lite0_imagenet"
    model = Registry.load(Settings(models_dir=real_models_dir, models=[name])).models[name]
    assert isinstance(model, CamModel) and model.cam_weight is not None
    async with make_client(models_dir=real_models_dir, models=[name]) as client:
        listed = {m["name"]: m["cam_methods"] for m in (await client.get("/models")).json()}
        assert listed[name] == ALL
        params = {"model": name, "top_k": 2, "include_grid": True}
        default = (await client.post("/cam", files=files(cat_jpeg), params=params)).json()
        grad = (await client.post("/cam", files=files(cat_jpeg), params={**params, "method": "gradcam"})).json()
        for method in ("ablationcam", "reciprocam", "eigencam"):
            r = await client.post("/cam", files=files(cat_jpeg), params={**params, "method": method})
            assert r.status_code == 200 and r.json()["method"] == method
    assert default["method"] == "cam" and default["masks"] is None
    for c, g in zip(default["classes"], grad["classes"], strict=True):
        assert c["cam_score"] == pytest.approx(c["logit"], abs=1e-3) and c["box"] == g["box"]
        np.testing.assert_allclose(c["grid"], g["grid"], atol=1e-4)
        grid = np.asarray(c["grid"])
        assert grid.mean() + float(model.cam_bias[c["index"]]) == pytest.approx(c["logit"], abs=1e-3)  # type: ignore[index]
