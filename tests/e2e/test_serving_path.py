"""The serving path against real servers: workers that hold their next batch without computing
what a caller of another front end left, large outputs through shared memory, and none of it
left behind by a killed server. What needs no process: tests/unit/test_serving_path.py."""

import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from transformers import (
    DistilBertForSequenceClassification,
)

from pipeserve.client import Client
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import SEED_SENTENCES, in_process, sst2_sentences
from tests.servers import launch_server, paused, queued, scrape, shared_blocks, wait_until, workers


@pytest.mark.slow
def test_a_batch_in_the_inbox_whose_caller_left_is_not_computed(every_task_two_front_ends):
    # Two front ends: the caller's cancel ends its call in a front end, which tells the engine
    # process, which withdraws the batch it has already sent to the worker.
    server = every_task_two_front_ends
    sent = ("pipeserve_batch_size_count", (("model", "clf"),))
    with (
        Client(server.address, timeout=60) as client,
        grpc.insecure_channel(server.address) as channel,
        ThreadPoolExecutor(1) as pool,
    ):
        worker = workers(server.address)[0]
        batches = scrape(server.metrics_url).get(sent, 0)
        with paused(worker.pid):
            running = pool.submit(client.classify, ["held by the paused worker"])
            wait_until(lambda: workers(server.address)[0].busy)
            request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="left while it waits")])
            call = pb_grpc.InferenceStub(channel).Classify.future(request, timeout=60)
            wait_until(lambda: scrape(server.metrics_url).get(sent) == batches + 2)  # in the inbox
            call.cancel()
            wait_until(lambda: queued(server) == 0)
        assert running.result()
        # The worker takes batches in order: once this one is answered, the withdrawn one
        # has been skipped or computed.
        assert client.classify(["after the pause"])
        assert workers(server.address)[0].items == worker.items + 2


def test_a_large_output_comes_through_shared_memory_exactly(client, tiny_distilbert):
    sentences = sst2_sentences(256)
    out = client.forward(sentences, outputs=["last_hidden_state"])
    hidden = out.last_hidden_state
    assert hidden.nbytes > 1024 * 1024  # far past what travels in the message itself
    (states,) = in_process(
        tiny_distilbert, DistilBertForSequenceClassification, sentences, "last_hidden_state"
    )
    for row, expected in enumerate(states):
        length = out.sequence_lengths[row]
        assert length == len(expected)
        np.testing.assert_allclose(hidden[row, :length], expected, rtol=0, atol=1e-5)
        assert not hidden[row, length:].any()


@pytest.mark.slow
def test_a_killed_server_leaves_no_shared_memory(tiny_distilbert):
    server = launch_server(tiny_distilbert)
    try:
        with Client(server.address, timeout=60) as client:
            client.forward(SEED_SENTENCES * 128, outputs=["last_hidden_state"])
        # Its own blocks, those its processes map: other servers on the machine make and
        # remove blocks of their own meanwhile.
        processes = [server.proc.pid, *server.worker_processes()]
        created = set().union(*map(shared_blocks, processes))
        assert created  # the workers' input slots
    finally:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    # Its workers exit when their pipe closes; then the resource tracker unlinks the rest.
    wait_until(lambda: not any(block.exists() for block in created), timeout=60)
