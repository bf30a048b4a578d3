"""The autoscaling overlays (deploy/kubernetes-hpa, deploy/kubernetes-keda and their component
deploy/kubernetes-scaling): schema-valid offline, strict, built-in kinds against
kubernetes-validate's schemas and the custom resources against their CRDs' schemas (vendored
in tests/unit/crds, SOURCE.md); aimed at the base's Deployment and Service; and scaling on a queue
metric that the server really exports, the same one in both.
"""

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest

from pipeserve.server.metrics import Metrics
from tests.helpers import ROOT, kustomized

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = ROOT / "deploy"
CRDS = Path(__file__).resolve().parent / "crds"
OVERLAYS = ["kubernetes-hpa", "kubernetes-keda"]
# The base's own test covers 1.27 and the newest; autoscaling/v2 behaviour is GA in both.
VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def _build(overlay: str) -> dict[str, dict[str, Any]]:
    documents = kustomized(overlay)
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents), "two resources of a kind"
    return by_kind


@pytest.fixture(scope="module", params=OVERLAYS)
def built(request) -> dict[str, dict[str, Any]]:
    return _build(request.param)


def _strict(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema that refuses unknown fields, as the API
    server's strict field validation does (it would otherwise drop them silently)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        strict.get("type") == "object"
        and isinstance(strict.get("properties"), dict)
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """A validator per (apiVersion, kind) served by the vendored CRDs."""
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec = crd["spec"]
        for version in spec["versions"]:
            if version["served"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                validators[key] = jsonschema.Draft7Validator(schema)
    return validators


CRD_VALIDATORS = _crd_validators()


def test_the_crds_are_vendored():
    assert set(CRD_VALIDATORS) >= {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("keda.sh/v1alpha1", "ScaledObject"),
    }


def test_strict_validation_refuses_an_unknown_field():
    validator = CRD_VALIDATORS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    monitor = _build("kubernetes-hpa")["ServiceMonitor"]
    assert validator.is_valid(monitor)
    misspelt = {**monitor, "spec": {**monitor["spec"], "endpoint": monitor["spec"]["endpoints"]}}
    assert not validator.is_valid(misspelt)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid(built, version):
    for doc in built.values():
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_VALIDATORS:
            CRD_VALIDATORS[key].validate(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_autoscaler_owns_the_replica_count(built):
    assert "replicas" not in built["Deployment"]["spec"]
    scalers = [kind for kind in ("HorizontalPodAutoscaler", "ScaledObject") if kind in built]
    assert len(scalers) == 1, "one autoscaler per overlay"
    scaler = built[scalers[0]]["spec"]
    target = scaler["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == (
        "Deployment",
        built["Deployment"]["metadata"]["name"],
    )
    low = scaler.get("minReplicas", scaler.get("minReplicaCount"))
    high = scaler.get("maxReplicas", scaler.get("maxReplicaCount"))
    # The PodDisruptionBudget lets one pod go: with two, one still serves.
    assert built["PodDisruptionBudget"]["spec"]["maxUnavailable"] < low <= high


def test_the_service_monitor_scrapes_the_metrics_port(built):
    monitor, service = built["ServiceMonitor"]["spec"], built["Service"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    env = {
        item["name"]: item["value"]
        for item in built["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert port["port"] == int(env["PIPESERVE_METRICS_PORT"])
    assert endpoint["path"] == "/metrics"


def _exported() -> str:
    """What /metrics shows once a request has gone through the queue."""
    metrics = Metrics()
    metrics.for_model("m").observe_stages(tokenize=1, queue=2, forward=3, postprocess=4)
    return generate_latest(metrics.registry).decode()


def _queue_selectors(query: str) -> list[str]:
    """The series a PromQL query reads: name{stage="queue",...}."""
    return re.findall(r'(\w+)\{stage="queue"', query)


def test_both_scale_on_the_queue_time_the_server_exports():
    adapter = yaml.safe_load(
        (DEPLOY / "kubernetes-hpa" / "prometheus-adapter-values.yaml").read_text(encoding="utf-8")
    )
    (rule,) = adapter["rules"]["custom"]
    hpa = _build("kubernetes-hpa")["HorizontalPodAutoscaler"]["spec"]
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    (trigger,) = _build("kubernetes-keda")["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"

    queries = [rule["seriesQuery"], rule["metricsQuery"], trigger["metadata"]["query"]]
    read = {name for query in queries for name in _queue_selectors(query)}
    base = "pipeserve_stage_duration_seconds"
    assert read == {f"{base}_sum", f"{base}_count"}
    exported = _exported()
    for name in read:
        assert re.search(rf'^{name}\{{model="m",stage="queue"\}} ', exported, re.MULTILINE), name
    # Sum over count: a mean time per request, in seconds, against the same target in both.
    for query in queries[1:]:
        assert re.search(rf"_sum\{{.*\}}\[1m\]\)\).*/ clamp_min\(sum\(rate\({base}_count", query)
    assert metric["pods"]["target"]["averageValue"] == "100m"
    assert float(trigger["metadata"]["threshold"]) == 0.1
