"""What an operator relies on: Prometheus metrics, gRPC health, reflection, JSON logs."""

import json
import re
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from pipeserve.client import Client, PipeserveError

from .conftest import launch_server


@pytest.fixture(scope="module")
def observed(tiny_distilbert):
    server = launch_server(tiny_distilbert, "--metrics-port", "0", "--log-format", "json")
    metrics_url = next(
        re.search(r"(http://\S+/metrics)", line).group(1)  # type: ignore[union-attr]
        for line in server.log
        if "/metrics" in line
    )
    yield server, metrics_url
    server.stop()


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_was_sent(observed):
    server, url = observed
    with Client(server.address, timeout=30) as client:
        for _ in range(5):
            client.classify(["one", "two", "three"])
        for _ in range(2):
            with pytest.raises(PipeserveError):
                client.classify([""])
        client.tokenize(["four"])
    metrics = _scrape(url)
    assert metrics[("pipeserve_requests_total", (("code", "OK"), ("rpc", "Classify")))] == 5
    invalid = (("code", "INVALID_ARGUMENT"), ("rpc", "Classify"))
    assert metrics[("pipeserve_requests_total", invalid)] == 2
    assert metrics[("pipeserve_requests_total", (("code", "OK"), ("rpc", "Tokenize")))] == 1
    assert metrics[("pipeserve_items_total", (("rpc", "Classify"),))] == 5 * 3 + 2
    assert metrics[("pipeserve_request_duration_seconds_count", (("rpc", "Classify"),))] == 7
    # Each of the 15 good items went through one batch; the 2 bad ones never reached one.
    assert metrics[("pipeserve_batch_size_sum", ())] == 15
    for stage in ("tokenize", "queue", "forward", "postprocess"):
        assert metrics[("pipeserve_stage_duration_seconds_count", (("stage", stage),))] == 5
    assert metrics[("pipeserve_queue_depth", ())] == 0
    assert metrics[("pipeserve_workers_alive", ())] == 1
    assert metrics[("pipeserve_worker_restarts_total", (("worker", "0"),))] == 0
    assert metrics[("pipeserve_worker_busy_seconds_total", (("worker", "0"),))] > 0


def test_health_reports_serving_for_the_server_and_the_service(observed):
    server, _ = observed
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pipeserve.v1.Inference"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
    probe = subprocess.run(
        [sys.executable, "-m", "pipeserve.client.cli", "health", "--target", server.address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert "SERVING" in probe.stdout


def test_reflection_describes_the_service(observed):
    server, _ = observed
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "pipeserve.v1.Inference" in database.get_services()
        service = database.FindFileContainingSymbol("pipeserve.v1.Inference")
        assert service.name == "pipeserve/v1/pipeserve.proto"


def test_json_logs_name_each_worker_device(observed):
    server, _ = observed
    entries = [json.loads(line) for line in server.log if line.startswith("{")]
    assert entries, "no JSON log lines"
    assert any("pinned to cpu:" in e["message"] for e in entries)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


def test_health_is_not_serving_while_the_model_loads(tiny_distilbert):
    """Health turns SERVING only once the workers are ready (the server listens before)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeserve.server", "--model", str(tiny_distilbert),
         "--port", "0", "--devices", "cpu"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        address = next(
            re.search(r"listening on (\S+:\d+)", line).group(1)  # type: ignore[union-attr]
            for line in proc.stderr
            if "listening on" in line
        )
        with grpc.insecure_channel(address) as channel:
            updates = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="pipeserve.v1.Inference"), timeout=120
            )
            # Workers are still importing torch when the port opens.
            assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        proc.wait(60)


def test_json_logs_are_only_json_workers_and_libraries_included(tiny_bert):
    # A head the checkpoint lacks, allowed: transformers' load report (a worker's warning).
    server = launch_server(
        tiny_bert, "--task", "text-classification", "--allow-missing-weights",
        "--log-format", "json",
    )  # fmt: skip
    try:
        with Client(server.address, timeout=60) as client:
            client.classify(["fine"])
            with pytest.raises(PipeserveError):  # over the model's 512 tokens, refused
                client.classify(["word " * 600], truncation=False)
    finally:
        assert server.stop() == 0
    entries = [json.loads(line) for line in server.log]  # every line, to the last

    loggers = {entry["logger"] for entry in entries}
    assert any(name.startswith("pipeserve.worker.") for name in loggers)
    assert any(name.startswith("transformers.") for name in loggers)
    assert entries[-1]["message"] == "stopped"
    messages = "\n".join(entry["message"] for entry in entries)
    assert "serving them randomly initialised" in messages
    # Neither belongs in a server log: a progress bar, and a warning about a refused text.
    assert "Loading weights" not in messages
    assert "Token indices sequence length" not in messages
