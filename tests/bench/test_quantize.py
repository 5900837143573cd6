"""Static int8 quantization (bench.perf_quantize) and the service-path evaluators it reports with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import scipy.io as sio

from app.config import REPO_MODELS, Settings
from app.registry import load_model
from app.runtime import OPENVINO
from bench import eval_localize, eval_pose, perf_quantize
from bench.eval_cam import tiny_imagenet
from tests.conftest import SHARED_DATA, noise_image
from tests.tiny_models import build

SETTINGS = Settings(intra_op_threads=1, max_concurrency=1)


def fake_tiny_imagenet(root: Path, wnids: list[str], per_class: int = 12, val: int = 6) -> Path:
    """Tiny ImageNet's layout: wnids.txt, train/<wnid>/images/*.JPEG with boxes, val/images + annotations."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, wnid in enumerate(wnids):
        d = root / "train" / wnid / "images"
        d.mkdir(parents=True)
        lines = []
        for i in range(per_class):
            name = f"{wnid}_{i}.JPEG"
            noise_image(64, 64, seed=100 * k + i).save(d / name, "JPEG")
            lines.append(f"{name}\t8\t8\t40\t50")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    rows = []
    for i in range(val):
        name = f"val_{i}.JPEG"
        noise_image(64, 64, seed=1000 + i).save(root / "val" / "images" / name, "JPEG")
        rows.append(f"{name}\t{wnids[i % len(wnids)]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return root


def fake_lsp(root: Path, n: int = 1000) -> Path:
    """LSP's layout: images/imNNNN.jpg (only every 200th written) and joints.mat (3, 14, n)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    joints = np.stack([rng.uniform(5, 40, (14, n)), rng.uniform(5, 60, (14, n)), np.zeros((14, n))])
    sio.savemat(str(root / "joints.mat"), {"joints": joints})
    for i in [*range(0, n, 200), 800, 801]:
        noise_image(48, 64, seed=i).save(root / "images" / f"im{i + 1:04d}.jpg", "JPEG")
    return root


def quantizable(task: str, path: Path) -> Path:
    """A tiny model of ``task`` whose nodes all have names (onnx.helper leaves them empty; quantization wants
    them), its sidecar's sha256 updated; returns the sidecar."""
    model = onnx.load(str(build(task, path).with_suffix(".onnx")))
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"n{i}"
    onnx.save(model, str(path))
    side = json.loads(path.with_suffix(".json").read_text())
    side["sha256"] = perf_quantize.sha256(path)
    path.with_suffix(".json").write_text(json.dumps(side))
    return path.with_suffix(".json")


def test_float_nodes_are_the_head(tmp_path: Path) -> None:
    """Everything after the last Conv, and the GAP -> dense tail, stays float; the convolutions do not."""
    for task in ("cam", "localize", "pose"):
        side = build(task, tmp_path / f"{task}.onnx")
        graph = onnx.load(str(side.with_suffix(".onnx"))).graph
        kept = set(perf_quantize.float_nodes(graph))
        by_name = {n.name: n for n in graph.node}
        assert not any(by_name[k].op_type == "Conv" for k in kept)
        last_conv = max(i for i, n in enumerate(graph.node) if n.op_type == "Conv")
        assert kept == {
            n.name for i, n in enumerate(graph.node) if i > last_conv or n.op_type in perf_quantize.TAIL_OPS
        }
        tail_only = set(perf_quantize.float_nodes(graph, after_last_conv=False))
        assert tail_only == {n.name for n in graph.node if n.op_type in perf_quantize.TAIL_OPS} and tail_only <= kept


@pytest.mark.parametrize("task", ["localize", "pose"])
def test_quantized_model_passes_the_servers_load_checks(tmp_path: Path, task: str) -> None:
    fp32 = load_model(quantizable(task, tmp_path / "m.onnx"), SETTINGS)
    args = argparse.Namespace(
        model="m",
        format="qdq",
        calib="minmax",
        calib_per_class=1,
        calib_stride=200,
        argv=["--model", "m"],
        data=fake_tiny_imagenet(tmp_path / "tiny", ["n01", "n02"]),
        lsp=fake_lsp(tmp_path / "lsp"),
        scenes=None,
    )
    (tmp_path / "out").mkdir()
    onnx_path, side_path = perf_quantize.quantize(args, fp32, SETTINGS, tmp_path / "out")
    meta = json.loads(side_path.read_text())
    assert meta["name"] == "m_int8" and meta["sha256"] == perf_quantize.sha256(onnx_path)
    assert ("LSP" if task == "pose" else "Tiny ImageNet") in meta["quantization"]["calibration"]
    int8 = load_model(side_path, SETTINGS)  # outputs present, CAM identity holds (the tail is float)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(onnx_path)).graph.node)
    assert set(int8.sidecar.outputs) == set(fp32.sidecar.outputs)


def test_a_person_finder_calibrates_on_evenly_spaced_training_scenes(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    (scenes / "train").mkdir(parents=True)
    rows = ["path,label,x1,y1,x2,y2"]
    for i in range(9):
        noise_image(80, 60, seed=i).save(scenes / "train" / f"{i:05d}.jpg", "JPEG")
        rows.append(f"train/{i:05d}.jpg,person,1,2,30,40")
    (scenes / "train.csv").write_text("\n".join(rows) + "\n")
    got = perf_quantize.scene_calibration_images(scenes, 3)
    assert got == [scenes / "train" / f"{i:05d}.jpg" for i in (0, 4, 8)]
    assert len(perf_quantize.scene_calibration_images(scenes, 50)) == 9  # never more than there are

    args = argparse.Namespace(
        model="f", format="qdq", calib="minmax", argv=["--model", "f"], scenes=scenes, calib_images=3
    )
    (tmp_path / "out").mkdir()
    finder = load_model(quantizable("localize", tmp_path / "f.onnx"), SETTINGS)
    _, side_path = perf_quantize.quantize(args, finder, SETTINGS, tmp_path / "out")
    assert json.loads(side_path.read_text())["quantization"]["calibration"].startswith(
        "minmax, 3 person-scenes training images"
    )
    load_model(side_path, SETTINGS)


def test_localize_evaluator_scores_the_service_output(tmp_path: Path) -> None:
    root = fake_tiny_imagenet(tmp_path / "tiny", ["n01", "n02", "n03", "n04"])
    build("localize", tmp_path / "loc.onnx")
    model = load_model(tmp_path / "loc.json", SETTINGS)
    res = eval_localize.evaluate(model, tiny_imagenet(root, "val"), SETTINGS)
    assert res["images"] == 6
    assert 0 <= res["top1_loc"] <= res["gt_known_loc"] <= 100 and res["top1_loc"] <= res["top1"]
    assert 0 <= res["mean_iou"] <= 1


def test_pose_evaluator_scores_the_service_output(tmp_path: Path) -> None:
    root = fake_lsp(tmp_path / "lsp")
    build("pose", tmp_path / "pose.onnx")
    model = load_model(tmp_path / "pose.json", SETTINGS)
    res = eval_pose.evaluate(model, root, SETTINGS, indices=range(800, 802))
    assert res["images"] == 2 and 0 <= res["pcp_mean"] <= 1 and 0 <= res["pck@0.2"] <= 1
    assert set(res["pcp"]) == {"upper_legs", "lower_legs", "upper_arms", "lower_arms", "head", "torso"}


@pytest.mark.skipif(not (SHARED_DATA / "lsp_train").is_dir(), reason="needs ../shared/data/lsp_train")
@pytest.mark.parametrize("name", ["efficientnet_lite0_lsp_pose", "efficientnet_lite0_lsp_pose_int8"])
def test_bundled_pose_models_reproduce_their_sidecar_pcp(name: str) -> None:
    """The PCP in each bundled pose sidecar is what the service itself scores on LSP 801-1000."""
    side = REPO_MODELS / f"{name}.json"
    if not side.exists():
        pytest.skip(f"{name} is not bundled")
    meta = json.loads(side.read_text())
    model = load_model(side, Settings(intra_op_threads=2))
    # an int8 twin's answers follow its provider: its sidecar holds both providers' figures
    metrics = (
        meta["metrics"].get("on_openvino", meta["metrics"])
        if model.session.get_providers()[0] == OPENVINO
        else meta["metrics"]
    )
    expected = metrics["lsp_801_1000"]["pcp_mean"] if "lsp_801_1000" in metrics else metrics["pcp"]["mean"]
    res = eval_pose.evaluate(model, SHARED_DATA / "lsp_train", SETTINGS)
    assert res["pcp_mean"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (calibration images)")
@pytest.mark.parametrize(
    "name", ["efficientnet_lite0_imagenet", "efficientnet_lite0_tiny_localize", "efficientnet_lite0_lsp_pose"]
)
def test_bundled_int8_models_are_what_the_command_makes(name: str, tmp_path: Path) -> None:
    """Quantization is deterministic: the recipe reproduces each shipped int8 model (here, bit for bit)."""
    shipped = REPO_MODELS / f"{name}_int8.onnx"
    if not shipped.exists():
        pytest.skip(f"{name}_int8 is not bundled")
    fp32 = load_model(REPO_MODELS / f"{name}.json", SETTINGS)
    args = argparse.Namespace(
        model=name,
        format="qdq",
        calib="minmax",
        calib_per_class=2,
        calib_stride=2,
        argv=[],
        data=perf_quantize.DATA,
        lsp=perf_quantize.LSP,
        scenes=None,
    )
    onnx_path, _ = perf_quantize.quantize(args, fp32, SETTINGS, tmp_path)
    made, ref = onnx.load(str(onnx_path)).graph, onnx.load(str(shipped)).graph
    assert [(n.op_type, n.name) for n in made.node] == [(n.op_type, n.name) for n in ref.node]
    # Same machine kind: bit for bit.  Elsewhere the calibration's float arithmetic may differ in the last
    # bits, so activation scales are compared to 1e-4 and zero points to one step; weights exactly.
    ours = {t.name: onnx.numpy_helper.to_array(t) for t in made.initializer}
    theirs = {t.name: onnx.numpy_helper.to_array(t) for t in ref.initializer}
    assert ours.keys() == theirs.keys()
    for key, a in ours.items():
        b = theirs[key]
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=key)
        elif "zero_point" in key:
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max(initial=0) <= 1, key
        else:
            assert np.array_equal(a, b), key


def test_paired_comparison_counts_the_discordant_images() -> None:
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, True])
    res = eval_localize.paired(a, b)
    assert (res["only_first"], res["only_second"]) == (1, 2)
    assert res["diff_pt"] == 25.0 and res["ci95_pt"] == pytest.approx(196 * np.sqrt(3) / 4, abs=0.01)
    assert eval_localize.summarize(a, np.array([0.6, 0.4, 0.5, 0.9]))["top1_loc"] == 25.0
