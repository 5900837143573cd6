"""``export.localize`` (and ``export.common.boxes``): box helpers, and a tiny seeded end-to-end run (synthetic CSV dataset -> ONNX)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from export.common.boxes import box_iou, flip_box, xyxy_to_rchw  # noqa: E402
from export.localize.data import preprocess, read_box_csv, read_tiny_imagenet  # noqa: E402
from export.localize.losses import box_loss, giou_loss  # noqa: E402
from export.localize.metrics import stratified_folds  # noqa: E402
from export.localize.model import BoxHead  # noqa: E402

TINY_IMAGENET = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tiny_imagenet_200"


def test_inclusive_pixel_box_to_rchw() -> None:
    assert xyxy_to_rchw(0, 0, 63, 63, width=64, height=64, inclusive=True) == (0.0, 0.0, 1.0, 1.0)
    r, c, h, w = xyxy_to_rchw(10, 20, 29, 59, width=64, height=64, inclusive=True)
    assert (r, c, h, w) == pytest.approx((20 / 64, 10 / 64, 40 / 64, 20 / 64))


def test_continuous_box_to_rchw_clips_to_image() -> None:
    assert xyxy_to_rchw(50, 0, 10, 100, width=200, height=100) == pytest.approx((0.0, 0.05, 1.0, 0.2))
    r, _, h, _ = xyxy_to_rchw(0, 80, 10, 130, width=100, height=100)
    assert r + h <= 1.0


def test_box_iou_known_values() -> None:
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 1.0], [0.2, 0.2, 0.0, 0.3]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0], [0.2, 0.2, 0.0, 0.3]])
    assert box_iou(a, b) == pytest.approx([1.0, 0.0, 1 / 3, 0.0])


def test_flip_box_is_an_involution() -> None:
    box = np.array([0.1, 0.2, 0.3, 0.5], dtype=np.float32)
    assert flip_box(box) == pytest.approx([0.1, 0.3, 0.3, 0.5])
    assert flip_box(flip_box(box)) == pytest.approx(box)


def test_giou_loss_zero_for_identical_and_positive_for_disjoint() -> None:
    a = torch.tensor([[0.1, 0.1, 0.3, 0.3]])
    b = torch.tensor([[0.6, 0.6, 0.3, 0.3]])
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(giou_loss(a, b)) > 1.0


def test_box_head_output_is_clipped_ordered_rchw() -> None:
    corners = torch.tensor([[0.2, 0.1, 0.6, 0.5], [-0.3, 1.2, 1.4, 0.7], [0.9, 0.9, 0.1, 0.2]])
    rchw = BoxHead.to_rchw(corners)
    expected = np.array([[0.2, 0.1, 0.4, 0.4], [0.0, 0.7, 1.0, 0.3], [0.1, 0.2, 0.8, 0.7]])
    assert np.allclose(rchw.numpy(), expected, atol=1e-6)


def test_box_loss_keeps_a_gradient_outside_the_image() -> None:
    corners = torch.tensor([[-0.5, -0.5, 1.5, 1.5]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    box_loss(corners, target).backward()
    assert corners.grad is not None
    # the top-left corner is pulled up towards 0, the bottom-right one down towards 1
    assert torch.all(corners.grad[0, :2] < 0) and torch.all(corners.grad[0, 2:] > 0)


def test_box_head_starts_at_the_given_box() -> None:
    head = BoxHead(8, (2, 2), reduce=4, hidden=8)
    head.init_to_box(np.array([0.1, 0.2, 0.5, 0.6]))
    head.eval()
    out = head(torch.randn(3, 8, 2, 2))
    assert out.shape == (3, 4)
    assert out.detach().numpy() == pytest.approx(np.tile([0.1, 0.2, 0.5, 0.6], (3, 1)), abs=0.05)


def test_stratified_folds_partition_and_balance() -> None:
    labels = np.repeat(np.arange(4), 9)
    folds = stratified_folds(labels, 3, seed=0)
    joined = np.sort(np.concatenate(folds))
    assert np.array_equal(joined, np.arange(len(labels)))
    for f in folds:
        assert np.bincount(labels[f], minlength=4).tolist() == [3, 3, 3, 3]


def test_preprocess_matches_service_recipe() -> None:
    from PIL import Image

    img = Image.fromarray(np.full((100, 50), 255, dtype=np.uint8), mode="L")
    x = preprocess(img, (32, 32), (16, 8))
    assert x.shape == (3, 32, 32)
    assert x.dtype == np.float32
    assert np.allclose(x, 1.0)


def _write_synthetic(root: Path, n: int = 16, jsonl: bool = False) -> Path:
    """Red or blue rectangles (the class) on noise; boxes in continuous pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = ("red", "blue")[i % 2]
        img = rng.integers(0, 80, size=(48, 64, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(0, 32)), int(rng.integers(0, 24))
        x2, y2 = x1 + int(rng.integers(12, 32)), y1 + int(rng.integers(10, 24))
        img[y1:y2, x1:x2] = (230, 30, 30) if label == "red" else (30, 30, 230)
        Image.fromarray(img).save(root / f"img_{i}.png")
        rows.append({"path": f"img_{i}.png", "label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    if jsonl:
        out = root / "data.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return out
    out = root / "data.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def test_read_box_csv_and_jsonl_agree(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    s_csv, lab_csv = read_box_csv(_write_synthetic(tmp_path / "a"))
    s_json, lab_json = read_box_csv(_write_synthetic(tmp_path / "b", jsonl=True))
    assert [lab.id for lab in lab_csv] == [lab.id for lab in lab_json] == ["blue", "red"]
    assert np.allclose([s.box for s in s_csv], [s.box for s in s_json])
    assert [s.label for s in s_csv] == [1, 0] * 8


def test_tiny_end_to_end_export(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.__main__ import main
    from export.common.onnx_export import cam_identity_error

    data = _write_synthetic(tmp_path)
    out = tmp_path / "m" / "tiny_loc.onnx"
    argv = ["localize", "--data-csv", str(data), "--backbone", "tiny", "--size", "64", "--pre-resize", "32", "32"]
    argv += [
        "--alphas",
        "0.3",
        "0.7",
        "--folds",
        "2",
        "--epochs",
        "2",
        "--cv-epochs",
        "1",
        "--flip",
        "--batch",
        "8",
        "--val-fraction",
        "0.25",
    ]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--onnx-check", "4", "--gap-images", "2"]
    main(argv)

    side = json.loads(out.with_suffix(".json").read_text())
    assert side["task"] == "localize"
    assert side["box_format"] == "rchw_norm"
    assert side["input"]["pre_resize"] == [32, 32]
    assert side["input"]["height"] == side["input"]["width"] == 64
    assert side["outputs"] == {n: n for n in ("features", "pooled", "logits", "cam_weight", "cam_bias", "box")}
    assert side["labels"] == [{"index": 0, "id": "blue", "name": "blue"}, {"index": 1, "id": "red", "name": "red"}]
    sweep = side["metrics"]["alpha_sweep"]
    assert [r["alpha"] for r in sweep["rows"]] == [0.3, 0.7]
    assert sweep["chosen_alpha"] in (0.3, 0.7)
    assert set(side["metrics"]["val"]) == {"top1_accuracy", "mean_iou", "gt_known_loc_accuracy", "top1_loc_accuracy"}
    assert {"whole_image_box", "mean_train_box", "initial_head"} <= side["metrics"]["baselines"].keys()
    assert side["verification"]["cam_identity_max_abs"] < 1e-3

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == list(side["outputs"])
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    feats, pooled, logits, w, b, box = sess.run(None, {"image": x})
    assert feats.shape[0] == 3 and feats.ndim == 4
    assert pooled.shape == (3, feats.shape[1])
    assert logits.shape == (3, 2)
    assert w.shape == (2, feats.shape[1]) and b.shape == (2,)
    assert box.shape == (3, 4)
    assert np.all(box >= 0) and np.all(box[:, 0] + box[:, 2] <= 1 + 1e-6) and np.all(box[:, 1] + box[:, 3] <= 1 + 1e-6)
    assert cam_identity_error(feats, w, b, logits) < 1e-4


@pytest.mark.data
def test_read_tiny_imagenet_layout() -> None:
    if not TINY_IMAGENET.is_dir():
        pytest.skip(f"Tiny ImageNet not found at {TINY_IMAGENET}")
    train, val, labels = read_tiny_imagenet(TINY_IMAGENET)
    assert (len(train), len(val), len(labels)) == (20000, 10000, 200)
    assert all(0 <= s.box[0] + s.box[2] <= 1 and 0 <= s.box[1] + s.box[3] <= 1 for s in train[:500])
    assert labels[train[0].label].id == train[0].path.parent.parent.name


def test_chosen_alpha_is_the_best_mean_first_on_ties() -> None:
    from export.localize.metrics import chosen_alpha

    rows: list[dict[str, float | list[float]]] = [
        {"alpha": 0.25, "top1_loc_accuracy_mean": 0.45},
        {"alpha": 0.5, "top1_loc_accuracy_mean": 0.45},
        {"alpha": 0.75, "top1_loc_accuracy_mean": 0.44},
    ]
    assert chosen_alpha(rows, 0.1) == 0.25
    assert chosen_alpha([], 0.3) == 0.3
