"""ClassifyZeroShot: every (text, hypothesis) pair one item of the shared batcher, scored as
transformers' pipeline("zero-shot-classification") scores them on the same tiny NLI
checkpoint, single- and multi-label, for many texts at once."""

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from pipeserve.client import AsyncClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import sst2_sentences
from tests.servers import ModelClient, for_model, front_end_clients, pipeserve

LABELS = ["politics", "sports", "cinema", "cooking"]


# The name the NLI model (task_models' "nli": entailment neither the first class nor the last,
# spelt in capitals, as the pipeline's lookup must cope with) is served under by the every_task
# servers.
NLI = "nli"


@pytest.fixture(scope="module")
def nli_path(task_models) -> Path:
    return task_models[NLI]


@pytest.fixture(scope="module")
def reference(nli_path):
    from transformers import pipeline

    return pipeline("zero-shot-classification", model=str(nli_path), device="cpu")


@pytest.fixture(scope="module")
def nli_server(every_task):
    return every_task


@pytest.fixture(scope="module")
def nli_client(nli_server) -> Iterator[ModelClient]:
    with ModelClient(nli_server.address, NLI) as client:
        yield client


def _classify_concurrently(client: Client, texts: list[str], **options):
    """Two texts per request, the requests sent at once by eight callers."""
    chunks = [texts[i : i + 2] for i in range(0, len(texts), 2)]
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda part: client.classify_zero_shot(part, **options), chunks))
    return [result for part in parts for result in part]


def _assert_same(served, expected, labels: list[str]) -> float:
    largest = 0.0
    for got, want in zip(served, expected, strict=True):
        assert [s.label for s in got] == want["labels"]
        assert [s.index for s in got] == [labels.index(label) for label in want["labels"]]
        difference = np.abs(np.array([s.score for s in got]) - want["scores"]).max()
        largest = max(largest, float(difference))
    assert largest < 1e-6
    print(f"max abs score difference {largest:.3g}")
    return largest


@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_equal_the_pipeline(reference, nli_client: Client, multi_label: bool):
    texts = sst2_sentences(40)
    served = _classify_concurrently(
        nli_client, texts, candidate_labels=LABELS, multi_label=multi_label
    )
    expected = reference(texts, candidate_labels=LABELS, multi_label=multi_label)
    _assert_same(served, expected, LABELS)
    # Random weights that still classify: the winning label varies with the text.
    assert len({result[0].label for result in served}) > 1
    if not multi_label:
        np.testing.assert_allclose([sum(s.score for s in r) for r in served], 1.0, atol=1e-5)


def test_a_template_a_single_label_and_a_long_text(reference, nli_client: Client):
    texts = sst2_sentences(12)
    template = "The review talks about {}."
    served = _classify_concurrently(
        nli_client, texts, candidate_labels=LABELS[:3], hypothesis_template=template
    )
    expected = reference(texts, candidate_labels=LABELS[:3], hypothesis_template=template)
    _assert_same(served, expected, LABELS[:3])
    one = nli_client.classify_zero_shot(texts, ["sports"])
    _assert_same(one, reference(texts, candidate_labels=["sports"]), ["sports"])
    # Longer than the model takes: the text is cut, never the hypothesis.
    long_text = " ".join(sst2_sentences(60))
    served = nli_client.classify_zero_shot([long_text], LABELS)
    _assert_same(served, [reference(long_text, candidate_labels=LABELS)], LABELS)


def test_async_client_and_cli_return_the_same(nli_server, nli_client: Client):
    texts = sst2_sentences(4)
    expected = nli_client.classify_zero_shot(texts, LABELS, multi_label=True)

    async def classify():
        async with AsyncClient(nli_server.address, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.classify_zero_shot([t], LABELS, multi_label=True, model=NLI)
                    for t in texts
                )
            )

    # Batched with other calls or not, the scores agree to float32 rounding.
    for (result,), want in zip(asyncio.run(classify()), expected, strict=True):
        assert [s.label for s in result] == [s.label for s in want]
        np.testing.assert_allclose([s.score for s in result], [s.score for s in want], atol=1e-6)
    labels = ",".join(LABELS)
    done = pipeserve(
        "classify-zero-shot",
        "--target",
        nli_server.address,
        "--model",
        NLI,
        "--labels",
        labels,
        "--multi-label",
        *texts,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [p["sequence"] for p in printed] == texts
    assert [p["labels"] for p in printed] == [[s.label for s in r] for r in expected]
    np.testing.assert_allclose(
        [p["scores"] for p in printed], [[s.score for s in r] for r in expected], atol=1e-6
    )


def test_bad_requests_are_refused_naming_the_problem(nli_server):
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(nli_server.address))
    refused = {
        "candidate_labels is empty": pb.ClassifyZeroShotRequest(inputs=["t"]),
        "inputs is empty": pb.ClassifyZeroShotRequest(candidate_labels=["a"]),
        "inputs[1] is empty": pb.ClassifyZeroShotRequest(inputs=["t", ""], candidate_labels=["a"]),
        "candidate_labels[1] is empty": pb.ClassifyZeroShotRequest(
            inputs=["t"], candidate_labels=["a", " "]
        ),
        "given twice": pb.ClassifyZeroShotRequest(inputs=["t"], candidate_labels=["a", "a"]),
        "has no {}": pb.ClassifyZeroShotRequest(
            inputs=["t"], candidate_labels=["a"], hypothesis_template="No label here."
        ),
        "cannot be formatted": pb.ClassifyZeroShotRequest(
            inputs=["t"], candidate_labels=["a"], hypothesis_template="{} and {}"
        ),
    }
    for message, request in refused.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.ClassifyZeroShot(for_model(request, NLI), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()


def test_a_model_without_an_entailment_label_is_refused(client: Client):
    with pytest.raises(PipeserveError) as error:
        client.classify_zero_shot(["a text"], ["a", "b"])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "entail" in str(error.value) and "NEGATIVE, POSITIVE" in str(error.value)
    assert "ClassifyZeroShot" not in client.model_info().served_rpcs


def test_an_nli_model_lists_zero_shot_and_not_rerank(nli_client: Client):
    served = nli_client.model_info().served_rpcs

    assert "ClassifyZeroShot" in served and "Classify" in served
    assert "Rerank" not in served  # three labels, not a cross-encoder's one


@pytest.mark.slow
def test_two_front_ends_classify_the_same(every_task_two_front_ends, reference):
    texts = sst2_sentences(16)
    expected = reference(texts, candidate_labels=LABELS)
    with front_end_clients(every_task_two_front_ends, NLI) as clients:
        for client in clients:
            served = _classify_concurrently(client, texts, candidate_labels=LABELS)
            _assert_same(served, expected, LABELS)
