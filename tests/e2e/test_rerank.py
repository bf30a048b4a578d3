"""Rerank: (query, document) pairs through a one-label cross-encoder as items of the shared
batcher, scored and sorted as sentence-transformers' CrossEncoder.predict() and .rank() do
on the same tiny checkpoint."""

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
from tests.checkpoints import TANH
from tests.helpers import sst2_sentences
from tests.servers import ModelClient, for_model, front_end_clients, pipeserve

# The name the cross-encoder (task_models' "ce") is served under by the every_task server.
CE = "ce"


@pytest.fixture(scope="module")
def cross_encoder_path(task_models) -> Path:
    return task_models[CE]


@pytest.fixture(scope="module")
def reference(cross_encoder_path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_path), device="cpu")


@pytest.fixture(scope="module")
def rerank_server(every_task):
    return every_task


@pytest.fixture(scope="module")
def ce_client(rerank_server) -> Iterator[ModelClient]:
    with ModelClient(rerank_server.address, CE) as client:
        yield client


def _queries() -> list[tuple[str, list[str]]]:
    """Eight queries, each with its own twenty documents (SST-2 sentences)."""
    sentences = sst2_sentences(8 * 21)
    return [(sentences[i * 21], sentences[i * 21 + 1 : (i + 1) * 21]) for i in range(8)]


def test_scores_and_order_equal_cross_encoder(reference, ce_client: Client):
    queries = _queries()
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda q: ce_client.rerank(q[0], q[1]), queries))
    largest = 0.0
    for (query, documents), ranked in zip(queries, served, strict=True):
        scores = reference.predict([(query, d) for d in documents])
        expected = reference.rank(query, documents)
        assert [r.index for r in ranked] == [e["corpus_id"] for e in expected]
        got = np.array([r.score for r in ranked])
        largest = max(largest, float(np.abs(got - [e["score"] for e in expected]).max()))
        np.testing.assert_allclose(got, scores[[r.index for r in ranked]], rtol=0, atol=1e-6)
        assert all(r.document is None for r in ranked)
    print(f"max abs score difference {largest:.3g}")
    # Random weights that still rank: the scores spread, so a swapped pair would show.
    assert np.ptp([r.score for r in served[0]]) > 0.05


def test_top_n_documents_and_raw_scores(reference, ce_client: Client):
    import torch

    query, documents = _queries()[0]
    ranked = ce_client.rerank(query, documents, top_n=3, return_documents=True)
    expected = reference.rank(query, documents, top_k=3, return_documents=True)
    assert [r.to_dict()["corpus_id"] for r in ranked] == [e["corpus_id"] for e in expected]
    assert [r.document for r in ranked] == [e["text"] for e in expected]
    raw = ce_client.rerank(query, documents, raw_scores=True)
    logits = reference.predict([(query, d) for d in documents], activation_fn=torch.nn.Identity())
    np.testing.assert_allclose([r.score for r in raw], logits[[r.index for r in raw]], atol=1e-5)
    assert [r.index for r in raw] == [r.index for r in ce_client.rerank(query, documents)]


def test_async_client_and_cli_rank_the_same(rerank_server, ce_client: Client):
    query, documents = _queries()[1]
    expected = [r.to_dict() for r in ce_client.rerank(query, documents, top_n=5)]

    async def rerank() -> list[list[dict]]:
        async with AsyncClient(rerank_server.address, timeout=60) as client:
            results = await asyncio.gather(
                *(client.rerank(query, documents, top_n=5, model=CE) for _ in range(4))
            )
        return [[r.to_dict() for r in ranked] for ranked in results]

    # Batched with other calls or not, the scores agree to float32 rounding.
    for result in asyncio.run(rerank()):
        assert [r["corpus_id"] for r in result] == [e["corpus_id"] for e in expected]
        np.testing.assert_allclose(
            [r["score"] for r in result], [e["score"] for e in expected], atol=1e-6
        )
    target = ("--target", rerank_server.address, "--model", CE)
    done = pipeserve("rerank", *target, "--top-n", "5", query, *documents)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [p["corpus_id"] for p in printed] == [e["corpus_id"] for e in expected]
    np.testing.assert_allclose(
        [p["score"] for p in printed], [e["score"] for e in expected], atol=1e-6
    )


def test_bad_requests_are_refused_naming_the_problem(rerank_server, ce_client: Client):
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(rerank_server.address))
    refused = {
        "documents is empty": pb.RerankRequest(query="q"),
        "query is empty": pb.RerankRequest(documents=["d"]),
        "documents[1] is empty": pb.RerankRequest(query="q", documents=["d", ""]),
        "top_n must be": pb.RerankRequest(query="q", documents=["d"], top_n=-1),
    }
    for message, request in refused.items():
        with pytest.raises(grpc.RpcError) as error:
            stub.Rerank(for_model(request, CE), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in error.value.details()
    with pytest.raises(ValueError, match="top_n"):
        ce_client.rerank("q", ["d"], top_n=0)
    with pytest.raises(ValueError, match="empty"):
        ce_client.rerank("q", [])


def test_a_cross_encoder_lists_rerank_and_not_zero_shot(ce_client: Client):
    served = ce_client.model_info().served_rpcs

    assert "Rerank" in served and "Classify" in served
    assert "ClassifyZeroShot" not in served  # one label: no entailment label among them


def test_a_two_label_classifier_cannot_rerank(client: Client):
    with pytest.raises(PipeserveError) as error:
        client.rerank("query", ["a document"])
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "cross-encoder" in str(error.value) and "with 2 labels" in str(error.value)
    assert "Rerank" not in client.model_info().served_rpcs


@pytest.mark.slow  # the edge models' server
def test_an_activation_crossencoder_would_not_apply_is_refused(edge_server):
    with ModelClient(edge_server.address, "ce-tanh", timeout=60) as client:
        served = client.model_info().served_rpcs
        with pytest.raises(PipeserveError) as error:
            client.rerank("query", ["a document"])

    assert "Rerank" not in served and "Classify" in served
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert TANH in error.value.details
    assert "sigmoid, identity" in error.value.details


@pytest.mark.slow
def test_a_saved_activation_is_honoured_through_two_front_ends(edge_server, edge_models):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(edge_models["ce-identity"]), device="cpu")
    queries = _queries()
    with front_end_clients(edge_server, "ce-identity") as clients:
        for client in clients:
            with ThreadPoolExecutor(4) as pool:
                served = list(pool.map(lambda q, c=client: c.rerank(q[0], q[1]), queries))
            for (query, documents), ranked in zip(queries, served, strict=True):
                expected = reference.rank(query, documents)
                assert [r.index for r in ranked] == [e["corpus_id"] for e in expected]
                np.testing.assert_allclose(
                    [r.score for r in ranked], [e["score"] for e in expected], atol=1e-5
                )
            # Identity: raw logits, outside [0, 1].
            assert any(not 0 <= r.score <= 1 for ranked in served for r in ranked)
