"""The Kubernetes manifests in deploy/kubernetes: schema-valid, complete, and consistent with
the server's own settings (ports, health service names, shutdown grace) and the Dockerfile.

Validation is offline, against the schemas that ship with kubernetes-validate (strict: an
unknown or misspelt field fails), for the oldest Kubernetes with GA gRPC probes and the newest.
"""

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeserve.server.settings import Settings
from pipeserve.server.workers.supervisor import Supervisor
from tests.helpers import ROOT, kustomized

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
# gRPC probes are GA from 1.27.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _resources() -> dict[str, dict[str, Any]]:
    """Every resource in the manifests, by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in _documents(path):
            assert doc["kind"] not in by_kind, f"two {doc['kind']}s"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    return _resources()


@pytest.fixture(scope="module")
def container(resources) -> dict[str, Any]:
    (only,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def env(container) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def _default(name: str) -> Any:
    # The field default, not Settings(): PIPESERVE_* variables of the test run must not count.
    return Settings.model_fields[name].default


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} >= {
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
    }


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path, version):
    documents = _documents(path)
    assert documents, f"{path.name} is empty"
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = _documents(DEPLOY / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.name for p in MANIFESTS)


def test_kustomize_build_is_valid():
    documents = kustomized("kubernetes")
    assert sorted(doc["kind"] for doc in documents) == sorted(_resources())
    for doc in documents:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_env_names_and_values_are_server_settings(env):
    given = {}
    for name, value in env.items():
        if name.startswith("PIPESERVE_"):
            field = name.removeprefix("PIPESERVE_").lower()
            assert field in Settings.model_fields, f"{name} is not a server setting"
            given[field] = value
    settings = Settings(**given)  # values parse as the server would parse them
    assert settings.host == "0.0.0.0"
    assert settings.devices == "auto"
    assert settings.workers_per_device == 1
    # Native gRPC probes send no token: health must stay open if auth is turned on.
    assert settings.auth_open_health is True
    assert env["HF_HOME"] == "/models"


def test_ports_agree_with_the_server(resources, container, env):
    grpc_port = int(env.get("PIPESERVE_PORT", _default("port")))
    assert grpc_port == _default("port") == 50051
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == grpc_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    assert container["readinessProbe"]["grpc"].get("service", "") in (
        "",
        "pipeserve.v1.Inference",
    )
    if "PIPESERVE_METRICS_PORT" in env:
        metrics_port = int(env["PIPESERVE_METRICS_PORT"])
        assert ports["metrics"] == metrics_port
        annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics_port)
    service_ports = {p["name"]: p for p in resources["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["port"] == grpc_port
    for name, port in service_ports.items():
        assert port["targetPort"] in (name, ports[name])


def test_grace_period_covers_the_shutdown(resources, container, env):
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = float(env.get("PIPESERVE_SHUTDOWN_GRACE_S", _default("shutdown_grace_s")))
    workers_stop = inspect.signature(Supervisor.stop).parameters["timeout_s"].default
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + workers_stop


def test_gpu_request_and_start_up(container):
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    startup = container["startupProbe"]
    # Room to download and load a model before liveness may restart the pod.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_runs_as_the_image_user(resources, container):
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))
    assert re.search(rf"^USER {uid}$", dockerfile, re.MULTILINE)
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_service_and_budget_select_the_pods(resources):
    deployment = resources["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["selector"]["matchLabels"],
        "Service": resources["Service"]["spec"]["selector"],
        "PodDisruptionBudget": resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector.items() <= labels.items(), kind
    # Headless, so DNS gives every pod's address and clients balance (round_robin).
    assert resources["Service"]["spec"]["clusterIP"] == "None"


def test_the_multi_model_overlay_serves_the_models_of_its_configmap(tmp_path):
    documents = {doc["kind"]: doc for doc in kustomized("kubernetes-multi-model")}
    for doc in documents.values():
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
    config_map, pod = documents["ConfigMap"], documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    # The file is where the env says, from the generated ConfigMap.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models-file")
    volume = next(v for v in pod["volumes"] if v["name"] == "models-file")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert env["PIPESERVE_MODELS_FILE"] == mount["mountPath"] + "/models.toml"
    models = tmp_path / "models.toml"
    models.write_text(config_map["data"]["models.toml"], encoding="utf-8")
    given = {k.removeprefix("PIPESERVE_").lower(): v for k, v in env.items() if "PIPESERVE_" in k}
    settings = Settings(**{**given, "models_file": models})
    assert [s.model_name for s in settings.per_model()] == ["sentiment", "ner", "minilm"]
    assert settings.default_name == "sentiment"
