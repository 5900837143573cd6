"""/pose without a box: the pose model's person finder (sidecar ``person_model``, a one-class localize model)
draws the box; a request's box overrides it; a sidecar naming a missing or unfit finder is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.config import Settings
from app.core.boxes import iou
from app.core.imaging import DecodedImage
from app.model import LoadedModel
from app.registry import Registry
from app.services import pose as pose_service
from app.services.common import Deadline, decode_for, fit_region, prepare
from app.services.localize import LocalizeParams, run_localize
from app.tasks import LOCALIZE, POSE
from tests.conftest import encode, files, noise_image
from tests.tiny_models import EDGES, JOINT_NAMES, build

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
    framed = {"names": JOINT_NAMES, "edges": EDGES, "framing": {"span": [0.55, 0.76], "min_side_ratio": 0.25}}
    build("pose", d / "pose_framed.onnx", seed=3, edit={"person_model": "finder", "joints": framed})
    build("pose", d / "pose_plain.onnx", seed=3)
    build("pose", d / "pose_sharp.onnx", seed=3, size=128, edit={"person_model": "finder"})  # 4x the finder's input
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
    assert registry.defaults["localize"] == "finder"  # the only localize model
    found = registry.get(POSE, "pose_found")
    assert found.person is registry.models["finder"] and registry.get(POSE, "pose_plain").person is None


def test_a_finder_left_out_of_the_models_setting_refuses_its_pose_model(person_dir: Path) -> None:
    registry = Registry.load(Settings(models_dir=person_dir, models=["pose_found"]))
    assert "pose_found" not in registry.models and registry.refused["pose_found.json"].field == "person_model"


async def test_no_box_runs_the_finder_and_a_box_overrides_it(
    make_client: Callable[..., Any], person_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pose_service, "PERSON_LOOKS", 1)  # one look: the finder's own /localize box
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


def test_a_person_finder_is_the_localize_default_only_when_it_is_the_only_one(person_dir: Path, tmp_path: Path) -> None:
    for f in person_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    build("localize", tmp_path / "zz_objects.onnx", seed=2)  # sorts after the finder
    registry = Registry.load(Settings(models_dir=tmp_path))
    assert registry.defaults["localize"] == "zz_objects" and registry.defaults["cam"] == "many"


def _cascade_written_out(finder: LoadedModel, decoded: DecodedImage, looks: int) -> list[float]:
    """The finder's cascade of ``looks`` looks, written out with plain arithmetic: its last box."""
    region, last = None, [0.0, 0.0, 0.0, 0.0]
    for _ in range(looks):
        found = fit_region(decoded, finder, region)
        raw = finder.run(found.batch, ["box"])["box"][0]
        r, c, bh, bw = (float(v) for v in raw)  # the finder's rchw_norm, in its input, scaled to the region
        rx1, ry1, rx2, ry2 = found.fit.region
        x1, y1 = rx1 + c * (rx2 - rx1), ry1 + r * (ry2 - ry1)
        x2, y2 = x1 + bw * (rx2 - rx1), y1 + bh * (ry2 - ry1)
        last = [float(v) for v in np.clip([x1, y1, x2, y2], 0, [160, 120, 160, 120])]
        g = pose_service.PERSON_REFINE
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, g * (x2 - x1) / 2, g * (y2 - y1) / 2
        region = (max(0.0, cx - hw), max(0.0, cy - hh), min(160.0, cx + hw), min(120.0, cy + hh))
    return last


def test_each_look_of_the_cascade_is_the_finder_on_a_region_around_the_last_box(
    person_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = encode(noise_image(160, 120, seed=4))
    settings = Settings(models_dir=person_dir, jpeg_draft=False)
    registry = Registry.load(settings)
    finder, pose = registry.get(LOCALIZE, "finder"), registry.get(POSE, "pose_found")
    prep = prepare(img, pose, settings)
    seen = set()
    for looks in (1, pose_service.PERSON_LOOKS):
        monkeypatch.setattr(pose_service, "PERSON_LOOKS", looks)
        want = _cascade_written_out(finder, prep.decoded, looks)
        got = pose_service.person_region(finder, prep.decoded, Deadline.start(5))
        assert got is not None and np.allclose(got, want, atol=1e-6)
        seen.add(tuple(round(v, 3) for v in want))
    assert len(seen) == 2  # the second look moved the box


def test_later_looks_after_a_box_continue_the_cascade(person_dir: Path) -> None:
    """run_pose splits the cascade around a possible second decode: the first look, then the rest after its box."""
    settings = Settings(models_dir=person_dir, jpeg_draft=False)
    finder = Registry.load(settings).get(LOCALIZE, "finder")
    decoded = prepare(encode(noise_image(160, 120, seed=4)), finder, settings).decoded
    first = pose_service.person_region(finder, decoded, Deadline.start(5), looks=1)
    assert first is not None
    rest = pose_service.person_region(finder, decoded, Deadline.start(5), after=first, looks=1)
    assert rest == pose_service.person_region(finder, decoded, Deadline.start(5), looks=2) != first
    assert pose_service.person_region(finder, decoded, Deadline.start(5), after=first, looks=0) == first


def test_a_person_with_too_few_pixels_is_decoded_again_at_a_finer_scale(person_dir: Path) -> None:
    """Decoded for the finder's look at the whole image (1/8 of a 1280x960 JPEG for its 32-px input), the image is
    decoded again only where a box holds less than PERSON_MIN_INPUT of the pose input along an axis."""
    settings = Settings(models_dir=person_dir)
    registry = Registry.load(settings)
    finder, pose = registry.get(LOCALIZE, "finder"), registry.get(POSE, "pose_found")
    data = encode(noise_image(1280, 960, seed=1))
    coarse = decode_for(data, finder, settings)
    assert coarse.resolution == 0.125

    def sharp(box: tuple[float, float, float, float], d: DecodedImage = coarse) -> DecodedImage:
        return pose_service.sharp_enough(d, data, pose, box, settings, False, Deadline.start(5))

    assert sharp((0, 0, 1280, 960)) is coarse and sharp((100, 100, 500, 400)) is coarse  # 50x37 px >= 19.2
    small = (100.0, 100.0, 260.0, 220.0)  # 20x15 px at 1/8
    finer = sharp(small)
    assert (finer.width, finer.height) == (1280, 960) and finer.resolution == 0.25  # 40x30 px
    assert min(160 * finer.resolution, 120 * finer.resolution) >= pose_service.PERSON_MIN_INPUT * 32
    assert sharp(small, finer) is finer
    whole = decode_for(encode(noise_image(1280, 960, seed=1), "PNG"), finder, settings)  # decoded in full
    assert whole.resolution == 1.0 and sharp((0, 0, 8, 8), whole) is whole
    # the decode budget bounds the second decode as it does the first: beyond it, the coarse image is kept
    tight = settings.model_copy(update={"max_decode_bytes": 160 * 120 * 4})  # 1/8 fits, 1/4 would not
    assert pose_service.sharp_enough(coarse, data, pose, small, tight, False, Deadline.start(5)) is coarse


async def test_a_person_short_of_pixels_is_decoded_again_within_the_decode_budget(
    make_client: Callable[..., Any], person_dir: Path
) -> None:
    """A 1280x960 JPEG is decoded at 1/8 for the finder's 32-px input; its box then holds less than 0.6 of the
    128-px pose input, so the pose model sees a second, finer decode - unless that decode would pass the decode
    budget, where the answer comes from the first one (never a 413 for an upload already accepted)."""
    data = encode(noise_image(1280, 960, seed=1))
    answers = []
    for budget in (200 << 20, 160 * 120 * 4):  # the default; the 1/8 decode's own cost
        async with make_client(models_dir=person_dir, max_decode_bytes=budget) as client:
            r = await client.post("/pose", files=files(data), params={"model": "pose_sharp"})
            assert r.status_code == 200, r.text
            assert r.json()["person_box_source"] == "person_model"
            answers.append([(j["x"], j["y"]) for j in r.json()["joints"]])
    assert not np.allclose(answers[0], answers[1], atol=1e-3)  # the finer image changed the answer


async def test_with_a_framing_the_pose_model_regresses_again_in_the_box_its_joints_frame(
    make_client: Callable[..., Any], person_dir: Path
) -> None:
    """No box: the pose model's first answer (in the finder's box) is framed as in training (joints_frame), and
    the joints returned are the model's on that box; with a box, the model runs once, on it."""
    img = encode(noise_image(160, 120, seed=4))
    settings = Settings(models_dir=person_dir, jpeg_draft=False)
    registry = Registry.load(settings)
    framed, plain = registry.get(POSE, "pose_framed"), registry.get(POSE, "pose_found")
    decoded = prepare(img, framed, settings).decoded
    assert framed.person is not None
    found = pose_service.person_region(framed.person, decoded, Deadline.start(5))
    assert found is not None

    def joints_in(box: tuple[float, ...]) -> np.ndarray:
        x1, y1, x2, y2 = box
        raw = framed.run(fit_region(decoded, framed, (x1, y1, x2, y2)).batch, ["joints"])["joints"][0]
        return np.asarray([x1, y1]) + np.asarray(raw, dtype=np.float64).reshape(-1, 2) * [x2 - x1, y2 - y1]

    first = joints_in(found)
    (x0, y0), (x1, y1) = first.min(axis=0), first.max(axis=0)
    w, h = max(x1 - x0, 1) / 0.55, max(y1 - y0, 1) / 0.76
    w, h = max(w, 0.25 * max(w, h)), max(h, 0.25 * max(w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    frame = tuple(float(v) for v in np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, [160, 120, 160, 120]))
    assert float(iou(frame, found)) < 0.99  # re-framing moves this box: the test can tell the two apart
    async with make_client(models_dir=person_dir, jpeg_draft=False) as client:
        r = (await client.post("/pose", files=files(img), params={"model": "pose_framed"})).json()
        assert r["person_box_source"] == "person_model"
        assert np.allclose([r["person_box"][k] for k in ("x1", "y1", "x2", "y2")], frame, atol=1e-3)
        got = np.array([[j["x"], j["y"]] for j in r["joints"]])
        assert np.allclose(got, joints_in(frame), atol=1e-3)
        # the unframed twin (same weights) answers the first look: the finder's box and the joints in it
        r = (await client.post("/pose", files=files(img), params={"model": "pose_found"})).json()
        assert np.allclose([[j["x"], j["y"]] for j in r["joints"]], first, atol=1e-3)
        # a request's box is used as given, framing or not
        r = (await client.post("/pose", files=files(img), params={"model": "pose_framed", "box": "10,5,60,70"})).json()
        assert [r["person_box"][k] for k in ("x1", "y1", "x2", "y2")] == [10, 5, 60, 70]
    assert plain.joints.framing is None and framed.joints.framing is not None


async def test_the_bundled_pose_model_finds_a_held_out_lsp_person_in_a_larger_photo(
    real_models_dir: Path, shared_data: Path
) -> None:
    """LSP image 901 (held out) pasted at 60 % of a 4:3 photo's height onto a plain grey background: /pose with no
    box draws a person box on it and puts the joints near the truth."""
    from PIL import Image

    from app.factory import create_app
    from export.pose.data import joints_box, read_lsp_joints
    from export.pose.metrics import pcp

    xy, annotated, _ = read_lsp_joints(shared_data / "lsp_train" / "joints.mat")
    with Image.open(shared_data / "lsp_train" / "images" / "im0901.jpg") as im:
        person = im.convert("RGB")
    scale = 0.6 * 480 / person.height
    person = person.resize((round(person.width * scale), round(person.height * scale)))
    scene = Image.new("RGB", (640, 480), (128, 128, 128))
    scene.paste(person, (380, 100))
    truth = xy[900] * [person.width / im.width, person.height / im.height] + [380, 100]
    names = ["efficientnet_lite0_lsp_pose", "efficientnet_lite0_person_box"]
    app = create_app(Settings(models_dir=real_models_dir, models=names, auth=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = (await client.post("/pose", files=files(encode(scene)))).json()
    assert r["person_box_source"] == "person_model"
    box = [r["person_box"][k] for k in ("x1", "y1", "x2", "y2")]
    x1, y1, x2, y2 = joints_box(truth, annotated[900])
    assert float(iou(box, [x1, y1, x2, y2])) >= 0.5
    joints = np.array([[j["x"], j["y"]] for j in r["joints"]])
    assert pcp(joints[None], truth[None], annotated[900][None])["mean"] >= 0.5
