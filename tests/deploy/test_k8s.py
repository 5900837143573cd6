"""Kubernetes manifests (deploy/k8s): valid against the Kubernetes JSON schemas (offline, bundled with
kubernetes-validate), and the fields that make instance loss and rollouts safe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
yaml = pytest.importorskip("yaml")

# Oldest Kubernetes version these manifests are meant for, and the newest the validator knows.
K8S_VERSIONS = ["1.27.0", "latest"]


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return doc


def resources() -> list[tuple[str, dict[str, Any]]]:
    kustomization = load("kustomization.yaml")
    return [(name, load(name)) for name in kustomization["resources"]]


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load("kustomization.yaml")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = {doc["kind"] for _, doc in resources()}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version() if version == "latest" else version
    for name, doc in resources():
        # strict: unknown fields (typos) are errors too
        kv.validate(doc, version, strict=True)
        assert name


def test_the_validator_rejects_a_broken_manifest() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    doc = load("deployment.yaml")
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"not": "a port"}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)
    doc = load("deployment.yaml")
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 45  # typo of terminationGracePeriodSeconds
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


def test_probes(container: dict[str, Any]) -> None:
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"http": 8000}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] in ("/healthz", "/readyz")
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # models load before the port opens
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


def graceful_shutdown_s() -> int:
    """uvicorn's --timeout-graceful-shutdown in the image's CMD (the Deployment keeps the image's command)."""
    m = re.search(r'"--timeout-graceful-shutdown",\s*"(\d+)"', (ROOT / "Dockerfile").read_text())
    assert m, "Dockerfile CMD has no --timeout-graceful-shutdown"
    return int(m[1])


def test_graceful_termination(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    assert "command" not in container and "args" not in container
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert pre_stop > 0
    assert graceful_shutdown_s() > Settings().queue_timeout_s  # the longest request fits in the drain
    assert grace > pre_stop + graceful_shutdown_s()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_security_context(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert re.search(r"^USER 10001$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    # read-only root: /tmp is an emptyDir
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume
    assert volume["emptyDir"].get("medium") != "Memory"  # scratch files must not count against the memory limit


def cpu_cores(value: str | int) -> float:
    s = str(value)
    return int(s[:-1]) / 1000 if s.endswith("m") else float(s)


def mebibytes(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", value)
    assert m, value
    return int(m[1]) * units[m[2]]


def test_resources_and_threads(container: dict[str, Any]) -> None:
    res = container["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[kind]), kind
    assert cpu_cores(res["requests"]["cpu"]) <= cpu_cores(res["limits"]["cpu"])
    assert mebibytes(res["requests"]["memory"]) <= mebibytes(res["limits"]["memory"])
    # Measured RSS with the bundled models is ~250 MiB (docs/scaling.md): the request covers it with headroom.
    assert mebibytes(res["requests"]["memory"]) >= 384
    env = {e["name"]: e.get("value") for e in container["env"]}
    fields = {f"LOCSVC_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    # Inferences at once x onnxruntime threads each never exceed the CPU limit (no throttling by design).
    threads = int(env["LOCSVC_MAX_CONCURRENCY"]) * int(env["LOCSVC_INTRA_OP_THREADS"])
    assert threads <= cpu_cores(res["limits"]["cpu"])
    assert int(env["LOCSVC_MAX_UPLOAD_BYTES"]) == Settings().max_upload_bytes


def test_api_key_from_a_secret_and_auth_on(container: dict[str, Any]) -> None:
    """Auth fails closed: the key comes from a Secret (no default), and nothing switches auth off."""
    env = {e["name"]: e for e in container["env"]}
    assert "LOCSVC_AUTH" not in env and Settings.model_fields["auth"].default is True
    ref = env["LOCSVC_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and not ref.get("optional", False)


def test_service_hpa_pdb_point_at_the_deployment(deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service, hpa, pdb = load("service.yaml"), load("hpa.yaml"), load("pdb.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 80
    assert hpa["spec"]["minReplicas"] >= 2  # one instance lost still leaves one serving
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) < hpa["spec"]["minReplicas"]
