"""The execution provider: OpenVINO's CPU plugin where it offers this CPU (``auto``, the default), onnxruntime's CPU
provider elsewhere, on request and for int8 twins, and a service that refuses to start on a provider it is told to
use and cannot create."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from app import runtime
from app.config import Settings
from app.errors import ConfigurationError
from app.factory import create_app
from app.registry import Registry, load_model
from app.runtime import OPENVINO, ProviderError, create_session, resolve_provider
from tests.tiny_models import build

pytest.importorskip("onnxruntime_ep_openvino", reason="onnxruntime-ep-openvino is installed on x86-64 only")

_found = runtime._openvino_lookup()
NO_DEVICE = _found if isinstance(_found, str) else ""  # why OpenVINO cannot run on this machine
needs_openvino = pytest.mark.skipif(bool(NO_DEVICE), reason=f"OpenVINO cannot run here: {NO_DEVICE}")
HERE = OPENVINO if not NO_DEVICE else "CPUExecutionProvider"  # what auto picks on this machine


@pytest.fixture
def no_openvino_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as on a CPU the plugin does not list (e.g. an AMD one)."""
    monkeypatch.setattr(runtime, "_openvino", "OpenVINO's plugin offers no device on this CPU (vendor AMD)")


def _feed(seed: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).normal(0, 1, (1, 3, 32, 32)).astype(np.float32)}


@needs_openvino
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
    session = create_session(tmp_path / "m.onnx", Settings(), quantized=True)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_sidecar_says_which_models_are_quantized(tmp_path: Path) -> None:
    plain = load_model(build("localize", tmp_path / "a.onnx"), Settings())
    twin = load_model(build("localize", tmp_path / "b.onnx", edit={"quantization": {"format": "QDQ"}}), Settings())
    assert plain.session.get_providers()[0] == HERE
    assert twin.session.get_providers() == ["CPUExecutionProvider"]


def test_auto_falls_back_to_the_cpu_provider_and_says_why(
    tmp_path: Path, no_openvino_device: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert resolve_provider(Settings()) == ("cpu", "OpenVINO's plugin offers no device on this CPU (vendor AMD)")
    assert resolve_provider(Settings(execution_provider="cpu")) == ("cpu", None)
    build("localize", tmp_path / "a.onnx")
    with caplog.at_level(logging.INFO, logger="app.registry"):
        registry = Registry.load(Settings(models_dir=tmp_path))
    assert registry.models["a"].session.get_providers() == ["CPUExecutionProvider"]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("execution provider")]
    assert said == ["execution provider: cpu (OpenVINO's plugin offers no device on this CPU (vendor AMD))"]


def test_openvino_by_name_refuses_a_cpu_it_cannot_run_on(tmp_path: Path, no_openvino_device: None) -> None:
    with pytest.raises(ProviderError, match="no device on this CPU"):
        Registry.load(Settings(models_dir=build("localize", tmp_path / "a.onnx").parent, execution_provider="openvino"))


def test_without_the_plugin_openvino_by_name_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime_ep_openvino" else real(name, *a)
    )
    with pytest.raises(ConfigurationError, match="LOCSVC_EXECUTION_PROVIDER=auto or cpu"):
        create_app(Settings(auth="off", execution_provider="openvino"))
    create_app(Settings(auth="off"))  # auto and cpu need nothing more
    create_app(Settings(auth="off", execution_provider="cpu"))


@needs_openvino
def test_the_load_log_names_each_models_provider(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build("localize", tmp_path / "a.onnx")
    build("localize", tmp_path / "b.onnx", edit={"quantization": {"format": "QDQ"}})
    with caplog.at_level(logging.INFO, logger="app.registry"):
        Registry.load(Settings(models_dir=tmp_path))
    loaded = {r.__dict__["model"]: r.__dict__["provider"] for r in caplog.records if r.getMessage() == "model loaded"}
    assert loaded == {"a": OPENVINO, "b": "CPUExecutionProvider"}


def test_a_missing_plugin_stops_the_registry_not_just_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without create_app's check (e.g. the BentoML peer loads the registry itself), every model would be refused
    one by one; the missing provider stops the load instead."""
    monkeypatch.setattr(runtime, "_openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", None)  # import fails
    with pytest.raises(ProviderError, match="LOCSVC_EXECUTION_PROVIDER=auto or cpu"):
        load_model(build("localize", tmp_path / "m.onnx"), Settings(execution_provider="openvino"))
