"""The serving path's own guarantees, against real servers: admission before any work, a
stream that holds a bounded number of requests, one bad item failing alone, and workers that
hold their next batch without computing what expired while it waited."""

import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

from pipeserve.client import Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc

from .conftest import (
    SEED_SENTENCES,
    launch_server,
    paused,
    queued,
    scrape,
    serving,
    sst2_sentences,
    wait_until,
    workers,
)

# Word pieces of bert-base-uncased below this id: [PAD], [unused*], punctuation, single letters
# and "the" (1996). A model with this vocabulary raises on any other word.
_SMALL_VOCAB = 2000


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory, minilm_path):
    """A classifier whose embedding is smaller than its tokenizer's vocabulary: the model
    itself raises (IndexError) on a text with a common word, as a mismatched checkpoint does."""
    torch.manual_seed(3)
    config = DistilBertConfig(
        vocab_size=_SMALL_VOCAB, dim=32, hidden_dim=64, n_layers=1, n_heads=2, num_labels=2
    )
    folder = tmp_path_factory.mktemp("small-vocab")
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def test_a_full_queue_refuses_before_tokenizing(tiny_distilbert):
    # Untruncated and over the model's length: tokenizing it would end in INVALID_ARGUMENT,
    # so RESOURCE_EXHAUSTED shows the call was refused before its text was tokenized.
    too_long = pb.ClassifyRequest(
        inputs=[pb.ModelInput(text="word " * 800)], options=pb.TokenizeOptions(truncation=False)
    )
    with serving(tiny_distilbert, "--max-queued-items", "2") as server:
        worker = workers(server.address)[0]
        with (
            Client(server.address, timeout=60) as client,
            ThreadPoolExecutor(3) as pool,
            grpc.insecure_channel(server.address) as channel,
        ):
            stub = pb_grpc.InferenceStub(channel)
            with paused(worker.pid):
                running = pool.submit(client.classify, ["held by the paused worker"])
                wait_until(lambda: workers(server.address)[0].busy)
                waiting = [pool.submit(client.classify, [f"queued {i}"]) for i in range(2)]
                wait_until(lambda: queued(server) == 2)
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Classify(too_long, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert running.result() and all(q.result() for q in waiting)
            # With room in the queue, the same request gets as far as its tokens.
            with pytest.raises(grpc.RpcError) as measured:
                stub.Classify(too_long, timeout=30)
            assert measured.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "tokens" in measured.value.details()


def test_a_stream_holds_at_most_its_bound_of_requests(tiny_distilbert):
    bound = 2
    sentences = [f"stream sentence number {i}" for i in range(10)]
    with serving(tiny_distilbert, "--max-stream-in-flight", str(bound)) as server:
        worker = workers(server.address)[0]
        with Client(server.address, timeout=60) as client, ThreadPoolExecutor(2) as pool:
            with paused(worker.pid):
                stream = pool.submit(
                    lambda: list(client.classify_stream([(s, [s]) for s in sentences]))
                )
                wait_until(lambda: workers(server.address)[0].busy)
                # The one the worker runs plus the ones waiting: never more than the bound.
                wait_until(lambda: queued(server) == bound - 1)
                # A call on its own stream still gets in: the server is not stuck, only the
                # stream is held back.
                marker = pool.submit(client.classify, ["a call of its own"])
                wait_until(lambda: queued(server) == bound)
                assert queued(server) == bound
            results = stream.result()
            assert marker.result()
        expected = {s: client_result for s, client_result in _one_by_one(server, sentences)}
    assert sorted(r.id for r in results) == sorted(sentences)
    for r in results:
        assert r.error is None
        assert r.results[0][0].label == expected[r.id].label
        assert r.results[0][0].score == pytest.approx(expected[r.id].score, abs=1e-6)


def _one_by_one(server, sentences: list[str]) -> Iterator[tuple[str, object]]:
    with Client(server.address, timeout=60) as client:
        for sentence in sentences:
            yield sentence, client.classify([sentence])[0][0]


def test_one_bad_item_fails_alone_and_its_batch_mates_get_their_results(small_vocab_model):
    good = ["a b c .", "the a !", "x y z", "the the", "q , r"]
    bad = "hello world"  # word pieces past the model's vocabulary
    model = DistilBertForSequenceClassification.from_pretrained(small_vocab_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(small_vocab_model)
    with torch.inference_mode():
        expected = {s: model(**tokenizer(s, return_tensors="pt")).logits[0].numpy() for s in good}
    # A long wait and a big batch: the six concurrent calls go to the worker as one batch.
    with serving(
        small_vocab_model, "--max-wait-ms", "2000", "--max-batch-size", str(len(good) + 1)
    ) as server:
        start = threading.Barrier(len(good) + 1)

        def call(text: str):
            with Client(server.address, timeout=60) as client:
                client.model_info()  # connected before the barrier
                start.wait()
                try:
                    return client.forward([text], outputs=["logits"]).logits[0]
                except PipeserveError as error:
                    return error

        with ThreadPoolExecutor(len(good) + 1) as pool:
            answers = dict(zip([*good, bad], pool.map(call, [*good, bad]), strict=True))
        info = workers(server.address)[0]
        log = "\n".join(server.log)
    assert isinstance(answers[bad], PipeserveError)
    assert answers[bad].code == grpc.StatusCode.INTERNAL
    assert "IndexError" not in answers[bad].details  # details stay in the server log
    assert "IndexError" in log
    for sentence in good:
        np.testing.assert_allclose(answers[sentence], expected[sentence], rtol=0, atol=1e-5)
    assert "running it in halves" in log  # they shared the batch that failed
    assert info.ready


def test_a_batch_in_the_inbox_whose_caller_left_is_not_computed(tiny_distilbert):
    # Two front ends: the caller's cancel ends its call in a front end, which tells the engine
    # process, which withdraws the batch it has already sent to the worker.
    with (
        serving(tiny_distilbert, "--frontends", "2", "--metrics-port", "0") as server,
        Client(server.address, timeout=60) as client,
        grpc.insecure_channel(server.address) as channel,
        ThreadPoolExecutor(1) as pool,
    ):
        worker = workers(server.address)[0]
        sent = ("pipeserve_batch_size_count", (("model", tiny_distilbert.name),))
        with paused(worker.pid):
            running = pool.submit(client.classify, ["held by the paused worker"])
            wait_until(lambda: workers(server.address)[0].busy)
            request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="left while it waits")])
            call = pb_grpc.InferenceStub(channel).Classify.future(request, timeout=60)
            wait_until(lambda: scrape(server.metrics_url).get(sent) == 2)  # in the inbox
            call.cancel()
            wait_until(lambda: queued(server) == 0)
        assert running.result()
        # The worker takes batches in order: once this one is answered, the withdrawn one
        # has been skipped or computed.
        assert client.classify(["after the pause"])
        assert workers(server.address)[0].items == 2


def test_a_large_output_comes_through_shared_memory_exactly(client, tiny_distilbert):
    sentences = sst2_sentences(256)
    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = DistilBertForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    out = client.forward(sentences, outputs=["last_hidden_state"])
    hidden = out.last_hidden_state
    assert hidden.nbytes > 1024 * 1024  # far past what travels in the message itself
    with torch.inference_mode():
        for row, sentence in enumerate(sentences):
            encoded = tokenizer(sentence, return_tensors="pt")
            expected = model(**encoded, output_hidden_states=True).hidden_states[-1][0].numpy()
            length = out.sequence_lengths[row]
            assert length == len(expected)
            np.testing.assert_allclose(hidden[row, :length], expected, rtol=0, atol=1e-5)
            assert not hidden[row, length:].any()


def test_a_killed_server_leaves_no_shared_memory(tiny_distilbert):
    before = set(os.listdir("/dev/shm"))
    server = launch_server(tiny_distilbert)
    try:
        with Client(server.address, timeout=60) as client:
            client.forward(SEED_SENTENCES * 128, outputs=["last_hidden_state"])
        created = set(os.listdir("/dev/shm")) - before
        assert created  # the workers' input slots
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    # Its workers exit when their pipe closes; then the resource tracker unlinks the rest.
    wait_until(lambda: not created & set(os.listdir("/dev/shm")), timeout=60)
