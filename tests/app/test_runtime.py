"""The execution provider: OpenVINO's CPU plugin where it offers this CPU (``auto``, the default), for every model,
int8 twins included; onnxruntime's CPU provider elsewhere and on request; OpenVINO's compiled-model cache (left
out, with a warning, where its folder cannot be used); and a service that refuses to start on a provider it is
told to use and cannot create."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
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


def test_an_int8_twin_runs_on_the_provider_of_the_others(tmp_path: Path) -> None:
    plain = load_model(build("localize", tmp_path / "a.onnx"), Settings())
    twin = load_model(build("localize", tmp_path / "b.onnx", edit={"quantization": {"format": "QDQ"}}), Settings())
    assert plain.session.get_providers()[0] == twin.session.get_providers()[0] == HERE


@needs_openvino
def test_the_openvino_cache_keeps_what_it_compiled(tmp_path: Path) -> None:
    """With a cache folder, the first session writes its compiled model there; the next one, made with the same
    settings, adds no blob of its own and answers as a session compiled without the cache."""
    build("localize", tmp_path / "m.onnx")
    cache = tmp_path / "ov-cache"
    settings = Settings(execution_provider="openvino", openvino_cache_dir=cache)
    create_session(tmp_path / "m.onnx", settings)
    blobs = sorted(cache.iterdir())
    assert blobs and all(b.stat().st_size > 0 for b in blobs)
    cached = create_session(tmp_path / "m.onnx", settings)
    assert sorted(cache.iterdir()) == blobs  # the same key: no second blob
    fresh = create_session(tmp_path / "m.onnx", Settings(execution_provider="openvino"))
    names = [o.name for o in fresh.get_outputs()]
    for a, b in zip(cached.run(names, _feed()), fresh.run(names, _feed()), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_cache_folder_that_cannot_be_made_is_left_out_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenVINO fails the compile where it cannot write its cache: the service starts without it, and says why
    (the app's log goes to stderr)."""
    (tmp_path / "file").write_bytes(b"")
    app = create_app(Settings(auth="off", openvino_cache_dir=tmp_path / "file" / "cache"))
    assert app.state.settings.openvino_cache_dir is None
    err = capsys.readouterr().err
    assert "WARNING" in err and "model cache is off" in err and "cannot be created" in err, err
    app = create_app(Settings(auth="off", openvino_cache_dir=tmp_path / "a" / "cache"))
    assert app.state.settings.openvino_cache_dir == tmp_path / "a" / "cache" and (tmp_path / "a" / "cache").is_dir()


def test_auto_falls_back_to_the_cpu_provider_and_says_why(
    tmp_path: Path, no_openvino_device: None, caplog: pytest.LogCaptureFixture
) -> None:
    assert resolve_provider(Settings()) == ("cpu", "OpenVINO's plugin offers no device on this CPU (vendor AMD)")
    assert resolve_provider(Settings(execution_provider="cpu")) == ("cpu", None)
    build("localize", tmp_path / "a.onnx")
    with caplog.at_level(logging.INFO, logger="app.registry"):
        registry = Registry.load(Settings(models_dir=tmp_path, max_concurrency=4, intra_op_threads=1))
    assert registry.models["a"].session.get_providers() == ["CPUExecutionProvider"]
    said = [r for r in caplog.records if r.getMessage().startswith("execution provider")]
    assert [r.getMessage() for r in said] == [
        "execution provider: cpu (OpenVINO's plugin offers no device on this CPU (vendor AMD)); "
        "requests in inference: 4, onnxruntime threads per inference: 1"
    ]
    assert (said[0].__dict__["max_concurrency"], said[0].__dict__["intra_op_threads"]) == (4, 1)


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
    assert loaded == {"a": OPENVINO, "b": OPENVINO}


def test_a_missing_plugin_stops_the_registry_not_just_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without create_app's check (e.g. the BentoML peer loads the registry itself), every model would be refused
    one by one; the missing provider stops the load instead."""
    monkeypatch.setattr(runtime, "_openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", None)  # import fails
    with pytest.raises(ProviderError, match="LOCSVC_EXECUTION_PROVIDER=auto or cpu"):
        load_model(build("localize", tmp_path / "m.onnx"), Settings(execution_provider="openvino"))


_RETAINED = """
import sys, threading
from PIL import Image
from app.runtime import map_large_blocks

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

print(map_large_blocks())
base = rss_mb()
turns = [threading.Event() for _ in range(5)]
done = threading.Event()

def worker(i):  # a worker thread of the pool: alive after its job, as anyio's are
    turns[i].wait()
    im = Image.new("RGB", (6000, 6000), (1, 2, 3))  # 144 MB in Pillow's 16 MiB blocks
    del im
    turns[i + 1].set()
    done.wait()

threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
turns[0].set()
turns[4].wait()
print(rss_mb() - base)
done.set()
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="resident memory is read from /proc")
def test_a_freed_decode_goes_back_to_the_os_whichever_thread_made_it() -> None:
    """Four worker threads make and free a 6000x6000 image in turn: with large blocks mapped on their own, the
    process keeps none of them (under glibc's moving threshold it kept 412 MB, each thread's heap its own)."""
    out = subprocess.run(
        [sys.executable, "-c", _RETAINED], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out[0] == "True", "mallopt is glibc's: this test runs on glibc"
    assert float(out[1]) < 32, f"{float(out[1]):.0f} MB kept after the images were freed"
