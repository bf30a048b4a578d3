"""Fidelity at the edges through real servers: checkpoints saved in older formats, position
tables that start past padding_idx, lowercasing that is not str.lower(), workers whose shared
memory went missing, and caller mistakes that must answer INVALID_ARGUMENT naming the cause,
never INTERNAL. What needs no server (activations, limits, templates):
tests/unit/test_edges.py."""

import multiprocessing
import os

import grpc
import numpy as np
import pytest

from pipeserve.client import Client
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import SEED_SENTENCES
from tests.servers import ModelClient, front_end_clients, serving, shared_blocks, wait_until

# Real sentences of several lengths (the tests must not need the SST-2 files).
SENTENCES = [
    *SEED_SENTENCES,
    "The film drags in its second hour, yet the ending lands with real force.",
    "A quiet, patient story about two brothers who stop speaking for a decade.",
    "Nothing here works: the jokes fall flat and the plot is a mess.",
    "It is the kind of warm, funny picture that studios rarely make any more.",
    "The cast is fine, but the script gives them nothing to do for ninety minutes.",
    "Beautifully shot and scored, it still feels a little too long.",
    "I laughed, I cried, and then I went to see it again the next day.",
    "A dull remake that adds nothing to the original but noise.",
    "Her performance alone is worth the price of the ticket.",
    "The director never decides whether this is a thriller or a comedy.",
]


@pytest.mark.slow
def test_a_legacy_identity_reranks_as_cross_encoder_through_two_front_ends(
    edge_server, edge_models
):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(edge_models["ce-legacy-identity"]), device="cpu")
    query, documents = SENTENCES[0], SENTENCES[1:]
    expected = reference.rank(query, documents)
    with front_end_clients(edge_server, "ce-legacy-identity") as clients:
        for client in clients:
            ranked = client.rerank(query, documents)
            assert [r.index for r in ranked] == [e["corpus_id"] for e in expected]
            np.testing.assert_allclose(
                [r.score for r in ranked], [e["score"] for e in expected], rtol=0, atol=1e-5
            )
    # Raw logits: a sigmoid would have kept every score inside (0, 1).
    assert any(not 0 < e["score"] < 1 for e in expected)


@pytest.mark.slow
def test_a_roberta_without_model_max_length_truncates_to_what_it_takes(edge_server, tiny_roberta):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_roberta).eval()
    texts = [" ".join(SENTENCES[:6]), " ".join(SENTENCES[6:])]
    with torch.inference_mode():
        encoded = tokenizer(
            texts, truncation=True, max_length=64, padding=True, return_tensors="pt"
        )
        expected = model(**encoded).logits.numpy()
    assert encoded["attention_mask"].sum(1).min() == 64  # both texts are cut
    with ModelClient(edge_server.address, "roberta", timeout=60) as client:
        assert client.model_info().max_length == 64
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(edge_server.address))
        inputs = [pb.ModelInput(text=t) for t in texts]
        request = pb.ForwardRequest(inputs=inputs, outputs=["logits"], model="roberta")
        forward = stub.Forward(request, timeout=60)
        assert list(forward.sequence_lengths) == [64, 64]
        logits = np.frombuffer(forward.outputs[0].tensor.data, dtype="<f4").reshape(2, -1)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
        windowed = client.classify(texts, stride=16)
        assert all(w.windows > 1 for w in windowed)
        with pytest.raises(grpc.RpcError) as error:
            ids = pb.TokenIds(input_ids=[101] + [2000] * 63 + [102])
            request = pb.ForwardRequest(inputs=[pb.ModelInput(ids=ids)], model="roberta")
            stub.Forward(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "65 tokens; the model accepts at most 64" in error.value.details()


@pytest.mark.slow
def test_openvino_takes_the_same_positions_and_refuses_oversized_answers(
    tiny_roberta, openvino_cache
):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pytest.importorskip("openvino")
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_roberta).eval()
    texts = [" ".join(SENTENCES[:6]), SENTENCES[6]]
    with torch.inference_mode():
        expected = [
            model(**tokenizer(t, truncation=True, max_length=64, return_tensors="pt")).logits[0]
            for t in texts
        ]
    cache = ("--cache-dir", str(openvino_cache))
    flags = ("--backend", "openvino", *cache, "--max-message-bytes", "1024")
    with serving(tiny_roberta, *flags) as server, Client(server.address, timeout=120) as client:
        assert client.model_info().max_length == 64
        served = client.forward(texts, outputs=["logits"])
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.address))
        hidden = pb.ForwardRequest(
            inputs=[pb.ModelInput(text=t) for t in texts], outputs=["last_hidden_state"]
        )
        batches = sum(w.batches for w in client.model_info().workers)
        with pytest.raises(grpc.RpcError) as error:
            stub.Forward(hidden, timeout=60)
        assert sum(w.batches for w in client.model_info().workers) == batches
    assert served.sequence_lengths.tolist() == [64, len(tokenizer(texts[1]).input_ids)]
    np.testing.assert_allclose(served["logits"], np.stack(expected), rtol=0, atol=1e-5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "last_hidden_state alone is 2 x 64 x 32 x 4 bytes" in error.value.details()
    assert "--max-message-bytes=1024" in error.value.details()


@pytest.mark.slow
def test_lowercasing_and_old_settings_embed_as_sentence_transformers(edge_server, edge_models):
    from sentence_transformers import SentenceTransformer

    path = edge_models["lowercasing"]
    texts = [
        # Greek capitals: str.lower() would end each word with a final sigma.
        "\u03a3\u0391\u03a3",
        "\u039f\u0394\u039f\u03a3 \u039a\u0391\u0399 \u03a3\u0391\u03a3",
        "İSTANBUL [MASK] Straße",
        " ".join(SENTENCES[:3]),  # cut at 24 tokens
        *SENTENCES[3:6],
    ]
    reference = SentenceTransformer(str(path), device="cpu")
    assert reference.max_seq_length == 24
    expected = reference.encode(texts, convert_to_numpy=True)
    with ModelClient(edge_server.address, "lowercasing", timeout=60) as client:
        served = client.embed(texts)
        assert client.model_info().embedding.max_seq_length == 24
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_zero_shot_mistakes_are_invalid_argument_through_two_front_ends(edge_server, edge_models):
    from transformers import pipeline

    nli = str(edge_models["nli"])
    reference = pipeline("zero-shot-classification", model=nli, device="cpu")
    text = " ".join(SENTENCES[:4])
    # "This example is one two three four five six." is 10 tokens, a pair adds 3: no token of
    # the text fits within 13, one within 14.
    long_label = "one two three four five six"
    texts = [f"{SENTENCES[i % len(SENTENCES)]} ({i})" for i in range(29)]
    labels = [f"topic {i}" for i in range(20)]
    refused = {
        "{.foo}": dict(inputs=["a text"], candidate_labels=["x"], hypothesis_template="{.foo}"),
        "{[x]}": dict(inputs=["a text"], candidate_labels=["x"], hypothesis_template="{[x]}"),
        "candidate_labels[1] 'one two": dict(
            inputs=[text],
            candidate_labels=["sports", long_label],
            options=pb.TokenizeOptions(max_length=13),
        ),
        "too many texts: 31": dict(inputs=[*texts, "one", "two"], candidate_labels=["x"]),
        "29 texts x 21 candidate_labels make 609": dict(
            inputs=texts, candidate_labels=[*labels, "one more"]
        ),
    }
    # edge_server's limits: 30 items a request, 600 queued.
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(edge_server.address))
    for named, fields in refused.items():
        with pytest.raises(grpc.RpcError) as error:
            request = pb.ClassifyZeroShotRequest(**fields, model="nli")
            stub.ClassifyZeroShot(request, timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, named
        assert named in error.value.details()
    with ModelClient(edge_server.address, "nli", timeout=120) as client:
        # 580 pairs of 29 texts: within the limits, which count texts.
        assert len(client.classify_zero_shot(texts, labels)) == 29
        # One token of text left: served, as the pipeline serves it.
        (served,) = client.classify_zero_shot([text], ["sports", long_label], max_length=14)
    # The pipeline truncates to the tokenizer's model_max_length.
    reference.tokenizer.model_max_length = 14
    expected = reference(text, ["sports", long_label])
    assert [s.label for s in served] == expected["labels"]
    np.testing.assert_allclose([s.score for s in served], expected["scores"], atol=1e-5)


@pytest.mark.slow
def test_forward_over_max_message_bytes_is_invalid_argument(tiny_bert_mlm):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    texts = ["a short text", "another one of them"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_mlm)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert_mlm).eval()
    with torch.inference_mode():
        expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    request = pb.ForwardRequest(inputs=[pb.ModelInput(text=t) for t in texts], outputs=["logits"])
    assert expected.nbytes > 1 << 20 > expected.nbytes // 2
    with serving(tiny_bert_mlm, "--max-message-bytes", str(1 << 20), "--frontends", "2") as server:
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.address))
        with pytest.raises(grpc.RpcError) as error:
            stub.Forward(request, timeout=60)
        with Client(server.address, timeout=60) as client:
            batches = sum(w.batches for w in client.model_info().workers)
        request.output_dtype = pb.DTYPE_FLOAT16
        half = stub.Forward(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"--max-message-bytes={1 << 20}" in error.value.details()
    assert batches == 0  # refused before any forward
    logits = np.frombuffer(half.outputs[0].tensor.data, dtype="<f2").reshape(expected.shape)
    for row, length in enumerate(half.sequence_lengths):  # padding is the server's own
        np.testing.assert_allclose(logits[row, :length], expected[row, :length], atol=1e-2)


def test_a_worker_without_its_shared_memory_never_reports_ready(tiny_distilbert):
    from pipeserve.server.schema import DeviceSpec, WorkerSpec, WorkerStartFailed
    from pipeserve.server.settings import DType, Quantize, Task
    from pipeserve.server.workers.shm import InputSlots
    from pipeserve.server.workers.supervisor import start_worker_process

    slots = InputSlots.create(1, 16)
    slots.close(unlink=True)
    spec = WorkerSpec(
        0, str(tiny_distilbert), None, Task.AUTO, DType.FLOAT32, Quantize.NONE,
        DeviceSpec(cpus=tuple(sorted(os.sched_getaffinity(0)))[:1]), slots=slots.spec,
    )  # fmt: skip
    parent, child = multiprocessing.Pipe()
    process = start_worker_process(spec, child)
    message = parent.recv()
    process.join(60)
    assert isinstance(message, WorkerStartFailed)
    assert "its input shared memory" in message.reason
    assert f"{slots.spec.names[0]} is gone" in message.reason
    with pytest.raises(EOFError):  # nothing after it: no WorkerReady
        parent.recv()


@pytest.mark.slow
def test_a_respawned_worker_gets_its_removed_shared_memory_anew(tiny_distilbert):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sentences = SENTENCES[:8]
    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    with torch.inference_mode():
        encoded = tokenizer(sentences, padding=True, return_tensors="pt")
        expected = model(**encoded).logits.softmax(-1).numpy()
    with serving(tiny_distilbert) as server, Client(server.address, timeout=60) as client:
        (pid,) = server.worker_processes()
        removed = {p for p in shared_blocks(pid) if p.name.startswith("psm_")}
        assert removed
        for block in removed:
            block.unlink()
        os.kill(pid, 9)
        wait_until(lambda: [w.restarts for w in client.model_info().workers if w.ready] == [1])
        results = client.classify(sentences, top_k=None)
        (worker,) = client.model_info().workers
        (new_pid,) = server.worker_processes()
        assert not removed & shared_blocks(new_pid)
    for result, scores in zip(results, expected, strict=True):
        by_index = {s.index: s.score for s in result}
        np.testing.assert_allclose([by_index[0], by_index[1]], scores, atol=1e-5)
    assert worker.restarts == 1  # no crash loop
    made_anew = [line for line in server.log if "shared memory was removed" in line]
    assert len(made_anew) == 1 and "made it anew" in made_anew[0]
    assert not any("failed to load" in line for line in server.log)
