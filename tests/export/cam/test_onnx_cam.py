"""``python -m export onnx-cam``: any ONNX GAP classifier made CAM-ready without torch, then loaded and served by
the service itself (its load checks the sha256, the outputs and the CAM identity; /cam answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from app.config import Settings  # noqa: E402
from app.factory import create_app  # noqa: E402
from app.registry import Registry  # noqa: E402
from app.sidecar import Task  # noqa: E402
from export.__main__ import main  # noqa: E402
from tests.conftest import encode, files, noise_image  # noqa: E402
from tests.export.cam import onnx_builders as builders  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
Builder = Callable[[Path], Path]


def _torch(builder: Builder) -> Builder:
    def build(path: Path) -> Path:
        pytest.importorskip("torch")
        return builder(path)

    return build


ACCEPTED: dict[str, tuple[Builder, list[str]]] = {
    "resnet_gap_flatten_gemm": (_torch(builders.resnet_style), []),
    "keras_nhwc_reducemean_attr": (builders.keras_style, []),
    "keras_nhwc_reducemean_opset18": (lambda p: builders.keras_style(p, opset=18), []),
    "keras_nhwc_gap_not_after_transpose": (lambda p: builders.keras_style(p, transpose_before_relu=True), []),
    "gap_conv1x1_flatten_dynamic": (_torch(builders.gap_conv_style), ["--size", "32", "32"]),
    "averagepool_gemm_transb0_alpha_beta": (builders.avgpool_style, []),
    "output_already_named_logits": (lambda p: builders.avgpool_style(p, output="logits"), []),
}


def _convert(tmp_path: Path, builder: Builder, *extra: str) -> tuple[Path, Path]:
    src = builder(tmp_path / "src.onnx")
    out = tmp_path / "models" / "mine.onnx"
    main(["onnx-cam", str(src), "--out", str(out), *extra])
    return src, out


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in sess.run(None, {sess.get_inputs()[0].name: x})]


async def _serve_cam(models_dir: Path, image: bytes) -> dict[str, Any]:
    app = create_app(Settings(models_dir=models_dir, auth=False, log_json=True, intra_op_threads=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/cam", files=files(image), params={"top_k": 3, "include_grid": True})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body


@pytest.mark.parametrize("case", sorted(ACCEPTED))
@pytest.mark.anyio
async def test_accepted_model_is_served(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    builder, extra = ACCEPTED[case]
    src, out = _convert(tmp_path, builder, *extra)
    printed = capsys.readouterr().out
    assert "max_abs_diff_logits" in printed and f"wrote {out}" in printed

    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["task"] == "cam" and meta["name"] == "mine" and meta["input"]["layout"] == "NCHW"
    assert (meta["input"]["height"], meta["input"]["width"]) == (32, 32)
    assert meta["outputs"] == {n: n for n in ("features", "pooled", "logits", "cam_weight", "cam_bias")}
    assert [lab["id"] for lab in meta["labels"]] == [f"class_{i}" for i in range(builders.CLASSES)]
    assert meta["normalization"] == {"scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}
    ver = meta["verification"]
    assert ver["max_abs_diff_logits"] < 1e-5 and ver["cam_identity_max_abs"] < 1e-4
    assert meta["provenance"]["max_abs_diff_logits"] == ver["max_abs_diff_logits"]
    assert "chelsea" in meta["provenance"]["verified_on"]
    assert meta["provenance"]["exporter"].startswith("onnx ")

    # independently of the exporter: the new graph, fed NCHW, gives the original's logits (softmax undone)
    x = np.random.default_rng(7).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    nhwc = meta["provenance"]["source_graph"]["input_layout"] == "NHWC"
    (orig,) = _run(src, x.transpose(0, 2, 3, 1).copy() if nhwc else x)
    got = dict(zip(meta["outputs"], _run(out, x), strict=True))
    feats, logits, w, b = got["features"], got["logits"], got["cam_weight"], got["cam_bias"]
    assert feats.shape == (1, 16, 8, 8) and logits.shape == (1, builders.CLASSES) and w.shape == (builders.CLASSES, 16)
    if case.startswith("keras"):
        z = np.exp(logits - logits.max())
        np.testing.assert_allclose(z / z.sum(), orig, atol=1e-6)
    else:
        np.testing.assert_allclose(logits, orig, atol=1e-5)
    np.testing.assert_allclose(np.einsum("yk,krc->yrc", w, feats[0]).mean(axis=(1, 2)) + b, logits[0], atol=1e-4)

    # the service loads it (sha256, outputs, CAM identity at warm-up) and /cam answers with it
    registry = Registry.load(Settings(models_dir=out.parent, auth=False, intra_op_threads=1))
    assert registry.get(Task.cam, None).name == "mine"
    body = await _serve_cam(out.parent, encode(noise_image(48, 40, seed=3)))
    assert body["model"] == "mine" and body["grid_size"] == [8, 8] and len(body["classes"]) == 3
    for c in body["classes"]:
        assert c["cam_score"] == pytest.approx(c["logit"], abs=1e-4)


def test_mobilenetv3_head_is_refused_with_its_nodes(tmp_path: Path) -> None:
    """With ``--no-split`` (by default such a head is split: tests/export/cam/test_cam_methods_torchcam.py)."""
    pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exc:
        _convert(tmp_path, builders.mobilenetv3_style, "--no-split")
    msg = str(exc.value)
    assert "not one linear layer" in msg and "HardSwish '/1/1.3/HardSwish'" in msg
    assert "GlobalAveragePool '/1/1.1/GlobalAveragePool' -> Conv '/1/1.2/Conv' -> HardSwish" in msg
    assert "Gemm '/1/1.5/Gemm'" in msg
    assert not (tmp_path / "models").exists()


def test_no_gap_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    with pytest.raises(SystemExit, match="no global average pooling found"):
        _convert(tmp_path, builders.no_gap)
    assert not (tmp_path / "models").exists()


def test_dynamic_input_needs_size(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    with pytest.raises(SystemExit, match=r"not static.*--size H W"):
        _convert(tmp_path, builders.gap_conv_style)
    with pytest.raises(SystemExit, match="differs from the graph's static input 32x32"):
        _convert(tmp_path, builders.avgpool_style, "--size", "64", "64")


def test_labels_and_normalization_are_recorded(tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["cat", "dog", "car", "tree", "cup"]))
    _, out = _convert(
        tmp_path,
        builders.avgpool_style,
        "--labels",
        str(labels),
        "--mean",
        "0.5",
        "0.4",
        "0.3",
        "--std",
        "0.2",
        "0.2",
        "0.2",
    )
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["labels"][1] == {"index": 1, "id": "dog", "name": "dog"}
    assert meta["normalization"]["mean"] == [0.5, 0.4, 0.3] and meta["normalization"]["std"] == [0.2] * 3
    assert meta["provenance"]["command"].startswith("python -m export onnx-cam ")
    labels.write_text(json.dumps(["cat"]))
    with pytest.raises(SystemExit, match="1 labels for the model's 5 classes"):
        _convert(tmp_path, builders.avgpool_style, "--labels", str(labels))


def test_runs_without_torch(tmp_path: Path) -> None:
    """The whole command imports neither torch nor torchvision: ``onnx`` and ``onnxruntime`` only."""
    src = builders.keras_style(tmp_path / "keras.onnx")
    code = (
        "import sys; from export.__main__ import main; "
        f"main(['onnx-cam', {str(src)!r}, '--out', {str(tmp_path / 'm' / 'k.onnx')!r}]); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'torchcam')); "
        "assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m" / "k.json").is_file()
