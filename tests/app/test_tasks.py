"""The task table: a bad sidecar is refused at load (one ERROR line naming its file and field) while the other
models serve; a new task is a spec, its route and its schema."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.factory import create_app
from app.model import ModelLoadError
from app.registry import Registry
from app.tasks import TASKS
from tests.app.fake_task import CLASSIFY
from tests.conftest import files
from tests.tiny_models import build

pytestmark = pytest.mark.anyio

BAD = {  # sidecar file -> the field its refusal names
    "pose_no_joints.json": "joints",
    "loc_yxyx.json": "box_format",
    "pose_few_joints.json": "joints.names",
    "cam_no_weight.json": "outputs",
    "not_json.json": None,
}


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mixed")
    build("cam", d / "good_cam.onnx", seed=1)
    build("localize", d / "good_loc.onnx", seed=2)
    build("pose", d / "good_pose.onnx", seed=3)
    build("pose", d / "pose_no_joints.onnx", edit={"joints": None})
    build("localize", d / "loc_yxyx.onnx", edit={"box_format": "yxyx_norm"})
    build("pose", d / "pose_few_joints.onnx", edit={"joints": {"names": ["a", "b"], "edges": [[0, 1]]}})
    outputs = {n: n for n in ("features", "pooled", "logits", "cam_bias")}
    build("cam", d / "cam_no_weight.onnx", edit={"outputs": outputs})
    (d / "not_json.json").write_text("{nope")
    return d


@pytest.fixture
def registry_log() -> Iterator[list[logging.LogRecord]]:
    """The records of app.registry (the app's logger does not propagate to pytest's capture)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("app.registry")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_bad_sidecars_are_refused_naming_file_and_field(mixed_dir: Path, registry_log: list[logging.LogRecord]) -> None:
    registry = Registry.load(Settings(models_dir=mixed_dir))
    assert sorted(registry.models) == ["good_cam", "good_loc", "good_pose"]
    assert {file: r.field for file, r in registry.refused.items()} == BAD
    errors = [r for r in registry_log if r.levelno == logging.ERROR]
    assert sorted(r.__dict__["file"] for r in errors) == sorted(str(mixed_dir / f) for f in BAD)
    for r in errors:  # one line each, naming the file and the field (in the message too, for text logs)
        name = Path(r.__dict__["file"]).name
        assert r.__dict__["field"] == BAD[name] and name in r.getMessage()
        assert BAD[name] is None or BAD[name] in r.getMessage()
    assert "'yxyx_norm'" in registry.refused["loc_yxyx.json"].reason


async def test_the_others_serve_and_readyz_and_models_say_what_was_refused(
    make_client: Callable[..., Any], mixed_dir: Path, jpeg: bytes
) -> None:
    async with make_client(models_dir=mixed_dir) as client:
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and set(ready["models"]) == {"good_cam", "good_loc", "good_pose"}
        assert {f: r["field"] for f, r in ready["refused"].items()} == BAD
        r = await client.get("/models")
        assert {m["name"] for m in r.json()} == {"good_cam", "good_loc", "good_pose"}
        assert r.headers["x-models-refused"].split(", ") == sorted(BAD)
        for path in ("/cam", "/localize", "/pose"):
            assert (await client.post(path, files=files(jpeg))).status_code == 200, path
        r = await client.post("/pose", files=files(jpeg), params={"model": "pose_no_joints"})
        assert r.status_code == 404 and r.json()["field"] == "model"


async def test_no_refusal_no_header(client: httpx.AsyncClient) -> None:
    assert (await client.get("/readyz")).json()["refused"] == {}
    assert "x-models-refused" not in (await client.get("/models")).headers


def test_a_default_that_is_not_loaded_still_fails_start_up(mixed_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="default_pose_model"):
        Registry.load(Settings(models_dir=mixed_dir, default_pose_model="pose_no_joints"))
    with pytest.raises(ModelLoadError, match="cannot serve /pose"):
        Registry.load(Settings(models_dir=mixed_dir, default_pose_model="good_cam"))


def test_every_default_setting_is_a_settings_field() -> None:
    assert all(spec.default_setting in Settings.model_fields for spec in TASKS)


def test_default_settings_keep_their_env_names(mixed_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCSVC_DEFAULT_CAM_MODEL", "good_loc")
    registry = Registry.load(Settings(models_dir=mixed_dir))
    assert registry.defaults == {"cam": "good_loc", "localize": "good_loc", "pose": "good_pose"}


async def test_a_new_task_is_a_spec_its_route_and_its_schema(tiny_models_dir: Path, jpeg: bytes) -> None:
    """/classify (tests/app/fake_task.py) is served by adding its row to the table, nothing else."""
    app = create_app(Settings(models_dir=tiny_models_dir, auth=False), tasks=(*TASKS, CLASSIFY))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/classify", files=files(jpeg))
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "tiny_cam" and 0 <= r.json()["label"]["index"] < 4
            r = await client.post("/classify", files=files(jpeg), params={"model": "tiny_pose"})
            assert r.status_code == 422 and r.json()["field"] == "model"
            models = {m["name"]: m["serves"] for m in (await client.get("/models")).json()}
            assert models == {
                "tiny_cam": ["/cam", "/classify"],
                "tiny_localize": ["/cam", "/localize", "/classify"],
                "tiny_pose": ["/pose"],
            }
            assert "/classify" in (await client.get("/openapi.json")).json()["paths"]
