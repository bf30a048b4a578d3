"""Several models in one server: each chosen by the request's `model` field, each answering
exactly as in-process with callers of both at once, each with its own workers, health and
metrics; an unknown model is NOT_FOUND naming the served ones; the CLI lists them and calls the
one named; a killed worker of one model leaves the other alone; a models file gives each model
its own settings, through several front ends too. The plan before anything loads:
tests/unit/test_models.py."""

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client import Client, PipeserveError
from tests.helpers import in_process, sst2_sentences
from tests.servers import (
    ServerProcess,
    clients_by_frontend,
    launch_server,
    pipeserve,
    scrape,
    serving,
    wait_until,
)

ATOL = 1e-5
SERVICE = "pipeserve.v1.Inference"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def two(tiny_distilbert, tiny_bert):
    """A classifier (`clf`, the default) and a bare encoder (`enc`), a worker each."""
    server = launch_server(
        f"clf={tiny_distilbert}", "--model", f"enc={tiny_bert}", "--metrics-port", "0"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sst2_sentences(48)


@pytest.mark.slow
def test_each_model_answers_as_in_process_with_callers_of_both_at_once(
    two, tiny_distilbert, tiny_bert, sentences
):
    from transformers import AutoModel, AutoModelForSequenceClassification

    (logits,) = in_process(tiny_distilbert, AutoModelForSequenceClassification, sentences, "logits")
    (hidden,) = in_process(tiny_bert, AutoModel, sentences, "last_hidden_state")
    chunks = [sentences[i : i + 3] for i in range(0, len(sentences), 3)]

    with Client(two.address) as client:

        def classify(chunk):
            return client.classify(chunk, model="clf", function_to_apply="none", top_k=None)

        def default_model(chunk):  # no model named: the first given, clf
            return client.forward(chunk, outputs=["logits"])["logits"]

        def encode(chunk):
            return client.forward(chunk, model="enc", outputs=["last_hidden_state"])

        with ThreadPoolExecutor(12) as pool:
            classified = pool.map(classify, chunks)
            defaults = pool.map(default_model, chunks)
            encoded = pool.map(encode, chunks)
            classified, defaults, encoded = list(classified), list(defaults), list(encoded)

    worst_logits = worst_hidden = 0.0
    for i, chunk in enumerate(chunks):
        for j, _ in enumerate(chunk):
            expected = logits[3 * i + j]
            scores = {s.index: s.score for s in classified[i][j]}
            served = np.array([scores[k] for k in range(len(expected))])
            worst_logits = max(worst_logits, float(np.abs(served - expected).max()))
            worst_logits = max(worst_logits, float(np.abs(defaults[i][j] - expected).max()))
            length = encoded[i].sequence_lengths[j]
            got = encoded[i]["last_hidden_state"][j, :length]
            worst_hidden = max(worst_hidden, float(np.abs(got - hidden[3 * i + j]).max()))
    print(f"largest difference: logits {worst_logits:.2e}, last_hidden_state {worst_hidden:.2e}")
    assert worst_logits <= ATOL
    assert worst_hidden <= ATOL


@pytest.mark.slow
def test_an_unknown_model_is_not_found_naming_the_served_ones(two):
    with Client(two.address) as client:
        for call in (
            lambda: client.classify(["a"], model="sentiment"),
            lambda: client.tokenize(["a"], model="sentiment"),
            lambda: client.model_info(model="sentiment"),
        ):
            with pytest.raises(PipeserveError) as refused:
                call()
            assert refused.value.code is grpc.StatusCode.NOT_FOUND
            assert "sentiment" in refused.value.details
            assert "clf, enc" in refused.value.details
        # A known model without the head an RPC needs: FAILED_PRECONDITION, as with one model.
        with pytest.raises(PipeserveError) as refused:
            client.classify(["a"], model="enc")
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.slow
def test_list_models_and_model_info_per_model(two, tiny_distilbert, tiny_bert):
    with Client(two.address) as client:
        listed = client.list_models()
        clf, enc = client.model_info(model="clf"), client.model_info(model="enc")
        default = client.model_info()
    assert [(m.name, m.model, m.task, m.default, m.serving) for m in listed] == [
        ("clf", str(tiny_distilbert), "text-classification", True, True),
        ("enc", str(tiny_bert), "feature-extraction", False, True),
    ]
    assert (clf.name, clf.model, clf.labels) == (
        "clf",
        str(tiny_distilbert),
        ["NEGATIVE", "POSITIVE"],
    )
    assert (enc.name, enc.task, enc.architecture) == ("enc", "feature-extraction", "BertModel")
    assert default.name == "clf"
    # One worker each; on two or more cores they get disjoint cores and share nothing.
    (clf_worker,), (enc_worker,) = clf.workers, enc.workers
    assert clf_worker.pid != enc_worker.pid
    if len(os.sched_getaffinity(0)) >= 2:
        assert clf_worker.device != enc_worker.device
        assert clf_worker.shared_with == enc_worker.shared_with == []


@pytest.mark.slow
def test_health_per_model(two):
    with grpc.insecure_channel(two.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE, f"{SERVICE}/clf", f"{SERVICE}/enc"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service=f"{SERVICE}/nope"), timeout=10)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_metrics_carry_the_model(two):
    before = scrape(two.metrics_url)
    with Client(two.address) as client:
        # First: a refused call is counted just after its status is sent, so not last.
        with pytest.raises(PipeserveError):
            client.forward(["four"], model="nope")
        client.classify(["one", "two"], model="clf")
        client.forward(["three"], model="enc")
    after = scrape(two.metrics_url)

    def change(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert change("pipeserve_requests_total", model="clf", rpc="Classify", code="OK") == 1
    assert change("pipeserve_requests_total", model="enc", rpc="Forward", code="OK") == 1
    # An unknown name is no label value of its own: the label set stays bounded.
    assert change("pipeserve_requests_total", model="", rpc="Forward", code="NOT_FOUND") == 1
    assert change("pipeserve_items_total", model="clf", rpc="Classify") == 2
    assert change("pipeserve_batch_size_sum", model="clf") == 2
    assert change("pipeserve_batch_size_sum", model="enc") == 1
    assert change("pipeserve_stage_duration_seconds_count", model="enc", stage="forward") == 1
    for model in ("clf", "enc"):
        assert after[("pipeserve_workers_alive", (("model", model),))] == 1
        assert after[("pipeserve_queue_depth", (("model", model),))] == 0


@pytest.mark.slow
def test_cli_lists_models_and_calls_the_one_named(two, tiny_bert):
    listed = pipeserve("models", "--target", two.address)
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)] == ["clf", "enc"]
    info = pipeserve("info", "--target", two.address, "--model", "enc")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model"] == str(tiny_bert)
    refused = pipeserve("classify", "--target", two.address, "--model", "nope", "a text")
    assert refused.returncode == 1
    assert "NOT_FOUND" in refused.stderr


@pytest.mark.slow
def test_a_killed_worker_of_one_model_does_not_affect_the_other(two, sentences):
    """Last in this module: it takes `enc` down until its worker is respawned."""
    with Client(two.address) as client:
        expected = client.classify(sentences, model="clf", top_k=None)
        (worker,) = client.model_info(model="enc").workers
        with (
            ThreadPoolExecutor(6) as pool,
            grpc.insecure_channel(two.address) as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)

            def status(service: str) -> int:
                request = health_pb2.HealthCheckRequest(service=service)
                return health.Check(request, timeout=10).status

            calls = [pool.submit(client.classify, [s], model="clf", top_k=None) for s in sentences]
            os.kill(worker.pid, signal.SIGKILL)
            wait_until(lambda: status(f"{SERVICE}/enc") == NOT_SERVING)
            # The server is not all there while a model is down; the other model still is.
            assert status("") == NOT_SERVING
            assert status(f"{SERVICE}/clf") == health_pb2.HealthCheckResponse.SERVING
            calls += [pool.submit(client.classify, [s], model="clf", top_k=None) for s in sentences]
            answers = [c.result()[0] for c in calls]  # raises if any clf call failed
        for got, want in zip(answers, expected * 2, strict=True):
            assert [s.label for s in got] == [s.label for s in want]
            assert np.allclose([s.score for s in got], [s.score for s in want], atol=ATOL)

        def respawned() -> bool:
            (now,) = client.model_info(model="enc").workers
            return now.ready and now.restarts == 1

        wait_until(respawned)
        assert client.forward(["back"], model="enc").sequence_lengths.tolist() == [3]


@pytest.fixture(scope="module")
def from_file(tmp_path_factory, tiny_distilbert, tiny_bert) -> Iterator[ServerProcess]:
    """A server of a models file, `sentiment` and `encoder` (the default, two workers), each
    with a limit of its own, behind two front ends."""
    models = tmp_path_factory.mktemp("models-file") / "models.toml"
    models.write_text(
        f"""
[models.sentiment]
path = "{tiny_distilbert}"
max_items_per_request = 8

[models.encoder]
path = "{tiny_bert}"
default = true
workers_per_device = 2
max_tokens_per_request = 1000
"""
    )
    with serving(None, "--models-file", str(models), "--frontends", "2") as server:
        yield server


@pytest.mark.slow
def test_a_models_file_gives_each_model_its_own_settings(from_file):
    # Sent whole (the client would split it), so that the server's own limit answers.
    with Client(from_file.address, split_concurrency=0) as client:
        listed = client.list_models()
        sentiment = client.model_info(model="sentiment")
        encoder = client.model_info()  # the default
        with pytest.raises(PipeserveError) as refused:
            client.classify([f"text {i}" for i in range(9)], model="sentiment")
    assert [(m.name, m.default) for m in listed] == [("sentiment", False), ("encoder", True)]
    assert (sentiment.max_items_per_request, len(sentiment.workers)) == (8, 1)
    assert encoder.name == "encoder"
    assert (encoder.max_tokens_per_request, len(encoder.workers)) == (1000, 2)
    assert encoder.max_items_per_request == 256  # the server-wide default
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
def test_a_models_file_serves_through_several_front_ends(from_file, tiny_distilbert, tiny_bert):
    from transformers import AutoModel, AutoModelForSequenceClassification

    sentences = ["a models file and two front ends", "each front end serves both models"]
    (logits,) = in_process(tiny_distilbert, AutoModelForSequenceClassification, sentences, "logits")
    (hidden,) = in_process(tiny_bert, AutoModel, sentences, "last_hidden_state")
    clients = clients_by_frontend(from_file.address)
    try:
        for client in clients.values():
            assert [m.name for m in client.list_models()] == ["sentiment", "encoder"]
            sentiment = client.model_info(model="sentiment")
            assert (sentiment.max_items_per_request, sentiment.frontends) == (8, 2)
            encoder = client.model_info()
            assert (encoder.max_tokens_per_request, len(encoder.workers)) == (1000, 2)
            out = client.forward(sentences, model="sentiment", outputs=["logits"])
            encoded = client.forward(sentences, outputs=["last_hidden_state"])  # the default
            for i, length in enumerate(encoded.sequence_lengths):
                np.testing.assert_allclose(out["logits"][i], logits[i], rtol=0, atol=1e-5)
                assert length == len(hidden[i])
                got = encoded["last_hidden_state"][i, :length]
                np.testing.assert_allclose(got, hidden[i], rtol=0, atol=1e-5)
    finally:
        for client in clients.values():
            client.close()
