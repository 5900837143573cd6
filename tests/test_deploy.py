"""What can be checked of the container files without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
yaml = pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_compose_service_structure(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"] == "."
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert api["read_only"] is True and api["user"] == "10001"
    assert "readyz" in " ".join(api["healthcheck"]["test"])
    limits = api["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]
    assert all(k.startswith("LOCSVC_") for k in api["environment"])


def test_compose_env_names_are_settings(compose: dict[str, Any]) -> None:
    from app.config import Settings

    fields = {f"LOCSVC_{name.upper()}" for name in Settings.model_fields}
    assert set(compose["services"]["api"]["environment"]) <= fields


def _run_lines(text: str) -> list[str]:
    return [m.strip() for m in re.findall(r"^RUN (.+)$", text, flags=re.M)]


def test_dockerfile_installs_like_the_makefile() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    make = (ROOT / "Makefile").read_text()
    for cmd in ("pip install --quiet -r requirements.txt", "pip install --quiet --no-deps"):
        assert any(cmd in line for line in _run_lines(docker)), cmd
        assert cmd in make, cmd
    assert "torch" not in (ROOT / "requirements.txt").read_text()


def test_dockerfile_runtime_is_non_root_with_healthcheck() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    runtime = docker.split("AS runtime", 1)[1]
    assert re.search(r"^USER \d+", runtime, flags=re.M)
    assert "HEALTHCHECK" in runtime and "/readyz" in runtime
    assert 'CMD ["uvicorn", "app.main:app"' in runtime
    assert (ROOT / "app" / "main.py").is_file()


def test_wheel_ships_the_page(tmp_path: Path) -> None:
    """The Docker image installs the package non-editable: the static page must be package data."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "static/*" in data["app"]
    assert (ROOT / "app" / "static" / "index.html").is_file()


def test_every_setting_is_documented_in_the_readme() -> None:
    from app.config import Settings

    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"LOCSVC_{n.upper()}" not in readme and not n.startswith("default_")]
    assert not missing, f"README's configuration table lacks {missing}"


def test_sizing_script_loads_and_reads_proc() -> None:
    """deploy/measure.py (docs/scaling.md) imports what it uses from bench/, and reads this process's /proc."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("deploy_measure", ROOT / "deploy" / "measure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.measure) and callable(module.start_service)
    assert module.proc_status(os.getpid(), "VmRSS") > 0
    assert module.cpu_seconds(os.getpid()) > 0


def test_compose_fails_closed_and_binds_loopback(compose: dict[str, Any]) -> None:
    """Auth on with a key compose insists on (``${VAR:?...}``); host ports on 127.0.0.1 unless asked otherwise."""
    for name in ("api", "lb"):
        for port in compose["services"][name]["ports"]:
            assert str(port).startswith("${LOCSVC_BIND:-127.0.0.1}:"), port
    env = compose["services"]["api"]["environment"]
    assert env["LOCSVC_API_KEY"].startswith("${LOCSVC_API_KEY:?")
    assert "LOCSVC_AUTH" not in env


def test_every_shipped_command_caps_connections() -> None:
    """uvicorn --limit-concurrency in the image (compose and k8s run its CMD) and in `make run`."""
    docker = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^CMD \[.*"--limit-concurrency", "\d+"', docker, flags=re.M)
    make = (ROOT / "Makefile").read_text()
    run = make.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"--limit-concurrency \d+", run) and "LOCSVC_AUTH=" in run
    assert "--host $(HOST)" in run and re.search(r"^HOST\s+\?= 127\.0\.0\.1$", make, flags=re.M)
    assert "gcc" not in docker  # no compiler: the service builds nothing
