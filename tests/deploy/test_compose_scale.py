"""The compose `scale` profile: replicas without host ports behind nginx (checked without a Docker engine)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
yaml = pytest.importorskip("yaml")
SCALE_UP = "docker compose --profile scale up -d --build --scale api-replica=3 api-replica lb"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc["services"]  # type: ignore[no-any-return]


def test_plain_up_is_unchanged(services: dict[str, Any]) -> None:
    """`docker compose up` (no profile) starts only `api`, on its fixed host port."""
    assert [name for name, s in services.items() if not s.get("profiles")] == ["api"]
    assert services["api"]["ports"] == ["${LOCSVC_BIND:-127.0.0.1}:${LOCSVC_PORT:-8000}:8000"]


def test_replicas_are_the_api_container_without_host_ports(services: dict[str, Any]) -> None:
    api, replica = services["api"], services["api-replica"]
    assert replica["profiles"] == ["scale"]
    assert not replica.get("ports"), "a fixed host port conflicts with --scale"
    assert "container_name" not in replica
    differing = {k for k in set(api) | set(replica) if api.get(k) != replica.get(k)}
    assert differing <= {"ports", "profiles", "expose", "deploy", "volumes"}, differing
    # api keeps OpenVINO's compiled models on a named volume; each replica on its own (they would all write one)
    assert api["volumes"] == ["ov-cache:/var/cache/locsvc"] and replica["volumes"] == ["/var/cache/locsvc"]
    assert replica["deploy"]["resources"] == api["deploy"]["resources"]
    assert replica["deploy"]["replicas"] >= 2


def test_load_balancer(services: dict[str, Any]) -> None:
    lb = services["lb"]
    assert lb["profiles"] == ["scale"]
    m = re.fullmatch(r"nginx:(\d+)\.(\d+)(?:\.\d+)?-alpine", lb["image"])
    assert m and (int(m[1]), int(m[2])) >= (1, 27), "upstream `server ... resolve` needs nginx >= 1.27.3"
    assert lb["depends_on"]["api-replica"]["condition"] == "service_healthy"
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert lb["read_only"] is True and "lb-healthz" in " ".join(lb["healthcheck"]["test"])

    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    (listen,) = re.findall(r"^\s*listen\s+(\d+);", conf, flags=re.M)
    assert any(str(p).endswith(f":{listen}") for p in lb["ports"])
    (server,) = re.findall(r"^\s*server\s+(\S+)\s+resolve\b", conf, flags=re.M)
    assert server == "api-replica:8000"  # the compose service name, resolved by Docker's DNS
    # Every path nginx writes is on the tmpfs (the root filesystem is read-only).
    writes = re.findall(r"^\s*(?:pid|\w+_temp_path)\s+(\S+);", conf, flags=re.M)
    assert len(writes) == 6 and all(w.startswith("/tmp/") for w in writes)
    assert any(t.startswith("/tmp:") for t in lb["tmpfs"])


def test_docs_give_the_exact_commands() -> None:
    docs = (ROOT / "docs" / "scaling.md").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    assert SCALE_UP in docs and SCALE_UP in compose
    assert "kubectl apply -k deploy/k8s" in docs
