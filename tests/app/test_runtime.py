"""The execution provider: OpenVINO's CPU plugin by default, onnxruntime's CPU provider on request and for int8
twins, and a service that refuses to start on a provider it cannot create."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.errors import ConfigurationError
from app.factory import create_app
from app.registry import load_model
from app.runtime import OPENVINO, create_session
from tests.tiny_models import build

pytest.importorskip("onnxruntime_ep_openvino", reason="onnxruntime-ep-openvino is installed on x86-64 only")


def _feed(seed: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)}


def test_openvino_gives_the_cpu_providers_answers(tmp_path: Path) -> None:
    build("localize", tmp_path / "m.onnx")
    ov = create_session(tmp_path / "m.onnx", Settings(execution_provider="openvino"))
    cpu = create_session(tmp_path / "m.onnx", Settings(execution_provider="cpu"))
    assert ov.get_providers()[0] == OPENVINO
    assert cpu.get_providers() == ["CPUExecutionProvider"]
    names = [o.name for o in cpu.get_outputs()]
    for seed in range(3):
        for a, b in zip(ov.run(names, _feed(seed)), cpu.run(names, _feed(seed)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_quantized_graph_stays_on_the_cpu_provider(tmp_path: Path) -> None:
    build("localize", tmp_path / "m.onnx")
    session = create_session(tmp_path / "m.onnx", Settings(execution_provider="openvino"), quantized=True)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_sidecar_says_which_models_are_quantized(tmp_path: Path) -> None:
    plain = load_model(build("localize", tmp_path / "a.onnx"), Settings())
    twin = load_model(build("localize", tmp_path / "b.onnx", edit={"quantization": {"format": "QDQ"}}), Settings())
    assert plain.session.get_providers()[0] == OPENVINO
    assert twin.session.get_providers() == ["CPUExecutionProvider"]


def test_without_the_plugin_the_service_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime_ep_openvino" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match="LOCSVC_EXECUTION_PROVIDER=cpu"):
        create_app(Settings(auth="off"))
    create_app(Settings(auth="off", execution_provider="cpu"))  # the CPU provider needs nothing more


def test_models_show_their_provider(tmp_path: Path) -> None:
    sidecar = build("localize", tmp_path / "m.onnx")
    assert json.loads(sidecar.read_text())["name"] == "m"
    assert load_model(sidecar, Settings(execution_provider="cpu")).session.get_providers() == ["CPUExecutionProvider"]
