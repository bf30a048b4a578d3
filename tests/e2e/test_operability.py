"""What an operator relies on: Prometheus metrics, gRPC health, reflection, JSON logs."""

import importlib.util
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from pipeserve.client import Client, PipeserveError
from tests.helpers import require
from tests.servers import launch_server, paused, scrape, wait_until

pytestmark = pytest.mark.slow  # servers of their own: metrics, loading states, log formats

# The model's name, the `model` label of every metric.
MODEL = ("model", "sst2")


@pytest.fixture(scope="module")
def observed(tiny_distilbert):
    server = launch_server(f"sst2={tiny_distilbert}", "--metrics-port", "0", "--log-format", "json")
    yield server, server.metrics_url
    server.stop()


def _change(before: dict, after: dict, name: str, *labels: tuple[str, str]) -> float:
    """How much a sample moved: the module's server is shared, so only changes are a test's."""
    key = (name, tuple(sorted((MODEL, *labels))))
    return after[key] - before.get(key, 0.0)


def test_metrics_count_what_was_sent(observed):
    server, url = observed
    texts = ["one", "two", "three"]
    before = scrape(url)
    with Client(server.address, timeout=30) as client:
        for _ in range(5):
            client.classify(texts)
        for _ in range(2):
            with pytest.raises(PipeserveError):
                client.classify([""])
        client.tokenize(["four"])
        lengths = [len(e.input_ids) for e in client.tokenize(texts, padding="do_not_pad")]
    metrics = scrape(url)
    assert lengths == [3, 3, 3]  # [CLS] word [SEP]: no padding, whatever the batching
    ok, invalid = ("code", "OK"), ("code", "INVALID_ARGUMENT")
    classify, tokenize = ("rpc", "Classify"), ("rpc", "Tokenize")
    assert _change(before, metrics, "pipeserve_requests_total", ok, classify) == 5
    assert _change(before, metrics, "pipeserve_requests_total", invalid, classify) == 2
    assert _change(before, metrics, "pipeserve_requests_total", ok, tokenize) == 2
    assert _change(before, metrics, "pipeserve_items_total", classify) == 5 * 3 + 2
    assert _change(before, metrics, "pipeserve_request_duration_seconds_count", classify) == 7
    # Each of the 15 good items went through one batch; the 2 bad ones never reached one.
    assert _change(before, metrics, "pipeserve_batch_size_sum") == 15
    assert _change(before, metrics, "pipeserve_batch_tokens_sum") == 5 * sum(lengths)
    for stage in ("tokenize", "queue", "forward", "postprocess"):
        change = _change(
            before, metrics, "pipeserve_stage_duration_seconds_count", ("stage", stage)
        )
        assert change == 5, stage
    assert metrics[("pipeserve_queue_depth", (MODEL,))] == 0
    assert metrics[("pipeserve_workers_alive", (MODEL,))] == 1
    assert metrics[("pipeserve_worker_restarts_total", (MODEL, ("worker", "0")))] == 0
    busy = ("pipeserve_worker_busy_seconds_total", (MODEL, ("worker", "0")))
    assert metrics[busy] > before[busy]


def test_queue_depth_gauge_follows_the_queue(observed):
    server, url = observed
    with Client(server.address, timeout=60) as client, ThreadPoolExecutor(3) as pool:
        (worker,) = client.model_info().workers
        with paused(worker.pid):
            held = pool.submit(client.classify, ["held by the paused worker"])
            wait_until(lambda: client.model_info().workers[0].busy)
            queued = [pool.submit(client.classify, [f"queued {i}"]) for i in range(2)]
            wait_until(lambda: client.model_info().queued_items == 2)
            assert scrape(url)[("pipeserve_queue_depth", (MODEL,))] == 2
        for call in (held, *queued):
            call.result()
    assert scrape(url)[("pipeserve_queue_depth", (MODEL,))] == 0


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


def test_while_the_model_loads_health_is_not_serving_and_calls_unavailable(tiny_distilbert):
    """The port opens before the workers have loaded the model; the worker is stopped as soon
    as it exists, so the model is certainly still loading while this looks."""
    server = launch_server(tiny_distilbert, until_listening=True)
    try:
        wait_until(lambda: bool(server.worker_processes()))
        (loading,) = server.worker_processes()
        with grpc.insecure_channel(server.address) as channel, Client(server.address) as client:
            updates = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="pipeserve.v1.Inference"), timeout=120
            )
            with paused(loading):
                assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(PipeserveError) as refused:
                    client.classify(["too early"], timeout=30)
                assert refused.value.code == grpc.StatusCode.UNAVAILABLE, refused.value
            assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
            assert client.classify(["in time"], timeout=30)[0][0].label in ("NEGATIVE", "POSITIVE")
    finally:
        server.stop()


def _openvino(cache: Path) -> list[str]:
    require(importlib.util.find_spec("openvino") is not None, "openvino not installed")
    return ["--backend", "openvino", "--cache-dir", str(cache)]


@pytest.mark.parametrize("variant", ["torch", "openvino", "two front ends"])
def test_json_logs_are_only_json_workers_and_libraries_included(tiny_bert, tmp_path, variant):
    flags = []
    if variant == "openvino":
        flags = _openvino(tmp_path)
    elif variant == "two front ends":
        flags = ["--frontends", "2"]
    # A head the checkpoint lacks, allowed: transformers' load report (a worker's warning).
    server = launch_server(
        tiny_bert, "--task", "text-classification", "--allow-missing-weights",
        "--log-format", "json", *flags, with_stdout=True,
    )  # fmt: skip
    try:
        with Client(server.address, timeout=60) as client:
            client.classify(["fine"])
            with pytest.raises(PipeserveError):  # over the model's 512 tokens, refused
                client.classify(["word " * 600], truncation=False)
            with pytest.raises(PipeserveError):  # a bad request
                client.classify([""])
    finally:
        assert server.stop() == 0
    # Every line, stdout's and stderr's, to the last.
    entries = [json.loads(line) for line in server.log]

    loggers = {entry["logger"] for entry in entries}
    assert any(name.startswith("pipeserve.worker.") for name in loggers)
    assert any(name.startswith("transformers.") for name in loggers)
    if variant == "two front ends":
        assert "pipeserve.frontend" in loggers
    assert entries[-1]["message"] == "stopped"
    messages = "\n".join(entry["message"] for entry in entries)
    assert "serving them randomly initialised" in messages
    # Neither belongs in a server log: a progress bar, and a warning about a refused text.
    assert "Loading weights" not in messages
    assert "Token indices sequence length" not in messages
