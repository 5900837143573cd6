"""/pose without a box: the pose model's person finder (sidecar ``person_model``, a one-class localize model)
draws the box; a request's box overrides it; a sidecar naming a missing or unfit finder is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.registry import Registry
from app.services.common import Deadline
from app.services.localize import LocalizeParams, run_localize
from app.tasks import LOCALIZE, POSE
from tests.conftest import encode, files, noise_image
from tests.tiny_models import build

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def person_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("person")
    build(
        "localize",
        d / "finder.onnx",
        classes=1,
        seed=5,
        edit={"labels": [{"index": 0, "id": "person", "name": "person"}]},
    )
    build("pose", d / "pose_found.onnx", seed=3, edit={"person_model": "finder"})
    build("pose", d / "pose_plain.onnx", seed=3)
    build("pose", d / "pose_missing.onnx", seed=3, edit={"person_model": "nobody"})
    build("cam", d / "many.onnx", seed=1)
    build("pose", d / "pose_unfit.onnx", seed=3, edit={"person_model": "many"})
    return d


def test_a_missing_or_unfit_finder_refuses_the_pose_model(person_dir: Path) -> None:
    registry = Registry.load(Settings(models_dir=person_dir))
    assert {f: r.field for f, r in registry.refused.items()} == {
        "pose_missing.json": "person_model",
        "pose_unfit.json": "person_model",
    }
    assert "'nobody' is not loaded" in registry.refused["pose_missing.json"].reason
    assert "one class" in registry.refused["pose_unfit.json"].reason
    found = registry.get(POSE, "pose_found")
    assert found.person is registry.models["finder"] and registry.get(POSE, "pose_plain").person is None


def test_a_finder_left_out_of_the_models_setting_refuses_its_pose_model(person_dir: Path) -> None:
    registry = Registry.load(Settings(models_dir=person_dir, models=["pose_found"]))
    assert "pose_found" not in registry.models and registry.refused["pose_found.json"].field == "person_model"


async def test_no_box_runs_the_finder_and_a_box_overrides_it(make_client: Callable[..., Any], person_dir: Path) -> None:
    img = encode(noise_image(120, 80, seed=2))
    settings = Settings(models_dir=person_dir, jpeg_draft=False)  # both decode the whole image: the same pixels
    registry = Registry.load(settings)
    finder = registry.get(LOCALIZE, "finder")
    expected = run_localize(finder, img, LocalizeParams(top_k=1), settings, Deadline.start(5)).response.box
    async with make_client(models_dir=person_dir, default_pose_model="pose_found", jpeg_draft=False) as client:
        r = (await client.post("/pose", files=files(img))).json()
        assert r["person_box_source"] == "person_model"
        got = [r["person_box"][k] for k in ("x1", "y1", "x2", "y2")]
        assert np.allclose(got, [expected.x1, expected.y1, expected.x2, expected.y2], atol=1e-6)
        assert 0 <= got[0] < got[2] <= 120 and 0 <= got[1] < got[3] <= 80
        # the joints are in that box's frame: x_norm 0 is its left edge
        j = r["joints"][0]
        assert j["x"] == pytest.approx(got[0] + j["x_norm"] * (got[2] - got[0]), abs=1e-4)

        r = (await client.post("/pose", files=files(img), params={"box": "10,5,60,70"})).json()
        assert r["person_box_source"] == "request"
        assert [r["person_box"][k] for k in ("x1", "y1", "x2", "y2")] == [10, 5, 60, 70]

        r = (await client.post("/pose", files=files(img), params={"model": "pose_plain"})).json()
        assert r["person_box_source"] == "image" and r["person_box"]["w"] == 120

        models = {m["name"]: m for m in (await client.get("/models")).json()}
        assert models["pose_found"]["person_model"] == "finder" and models["pose_plain"]["person_model"] is None
        png = await client.post("/pose", files=files(img), params={"format": "png"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
