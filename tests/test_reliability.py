"""Faults and overload against real servers: dead and hung workers, a full queue, deadlines,
cancellation and SIGTERM. Workers are paused with SIGSTOP to hold work in flight on purpose."""

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import grpc
import numpy as np
import pytest
import torch
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeserve.client import AsyncClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc

from .conftest import ServerProcess, launch_server, sst2_sentences

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@contextmanager
def serving(model, *flags: str) -> Iterator[ServerProcess]:
    server = launch_server(model, *flags)
    try:
        yield server
    finally:
        server.stop()


def workers(address: str):
    with Client(address, timeout=10) as client:
        return client.model_info().workers


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Polls `condition` (an RPC each time) until it holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def wait_for_health(address: str, status: int, timeout: float = 60) -> None:
    """Blocks on the health Watch stream until the server reports `status`."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for update in stub.Watch(health_pb2.HealthCheckRequest(), timeout=timeout):
            if update.status == status:
                return


@contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        # The worker may have been killed meanwhile (the server kills hung workers).
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def reference(tiny_distilbert):
    """In-process logits of the tiny model, one sentence at a time."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    sentences = sst2_sentences(64)
    with torch.inference_mode():
        logits = [model(**tokenizer(s, return_tensors="pt")).logits[0].numpy() for s in sentences]
    return dict(zip(sentences, logits, strict=True))


def test_killed_worker_loses_no_call_and_is_respawned(tiny_distilbert, reference):
    sentences = list(reference)
    with serving(tiny_distilbert, "--workers-per-device", "2", "--max-batch-size", "4") as server:
        victim = workers(server.address)[0]
        outcomes: Counter[str] = Counter()
        wrong: list[str] = []
        slowest = 0.0
        first_success = threading.Event()
        lock = threading.Lock()

        def caller(index: int) -> None:
            nonlocal slowest
            with Client(server.address, timeout=30) as client:
                for step in range(25):
                    sentence = sentences[(index * 25 + step) % len(sentences)]
                    start = time.monotonic()
                    try:
                        out = client.forward([sentence], outputs=["logits"])
                        code = "OK"
                        if not np.allclose(out.logits[0], reference[sentence], atol=1e-5):
                            wrong.append(sentence)
                        first_success.set()
                    except PipeserveError as error:
                        code = error.code.name
                    with lock:
                        outcomes[code] += 1
                        slowest = max(slowest, time.monotonic() - start)

        with ThreadPoolExecutor(8) as pool:
            calls = [pool.submit(caller, i) for i in range(8)]
            assert first_success.wait(60)
            killed_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            for call in calls:
                call.result()

        assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes
        assert sum(outcomes.values()) == 8 * 25
        assert outcomes["OK"] > 0
        assert slowest < 30  # no call hung to its deadline
        assert wrong == []
        wait_until(lambda: workers(server.address)[0].ready)
        recovered_s = time.monotonic() - killed_at
        respawned = workers(server.address)[0]
        assert respawned.restarts == 1 and respawned.pid != victim.pid
        print(f"\nworker kill: {dict(outcomes)}; respawned and ready in {recovered_s:.2f} s")

        # The respawned worker serves: idle workers take turns, so it gets some of these.
        before = workers(server.address)[0].batches
        with Client(server.address, timeout=30) as client:
            for sentence in sentences[:4]:
                out = client.forward([sentence], outputs=["logits"])
                np.testing.assert_allclose(out.logits[0], reference[sentence], atol=1e-5)
        assert workers(server.address)[0].batches > before


def test_hung_worker_is_killed_and_its_batch_retried_on_another(tiny_distilbert, reference):
    sentence = next(iter(reference))
    with serving(
        tiny_distilbert, "--workers-per-device", "2", "--forward-timeout-s", "2"
    ) as server:
        hung = workers(server.address)[0]
        with paused(hung.pid), Client(server.address, timeout=30) as client:
            # Idle workers are used in turn, so one of the first two calls meets the hung one.
            for _ in range(2):
                out = client.forward([sentence], outputs=["logits"])
                np.testing.assert_allclose(out.logits[0], reference[sentence], atol=1e-5)
        wait_until(lambda: workers(server.address)[0].ready)
        assert workers(server.address)[0].restarts == 1


def test_items_fail_unavailable_after_their_retry_also_dies(tiny_distilbert):
    with serving(
        tiny_distilbert, "--workers-per-device", "2", "--forward-timeout-s", "1"
    ) as server:
        first, second = workers(server.address)
        with (
            paused(first.pid),
            paused(second.pid),
            Client(server.address, timeout=30) as c,
            pytest.raises(PipeserveError) as failed,
        ):
            c.classify(["a sentence nobody will classify"])
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert "died" in failed.value.details


def test_no_live_worker_means_unavailable_at_once_and_not_serving(tiny_distilbert):
    with serving(tiny_distilbert) as server:
        os.kill(workers(server.address)[0].pid, signal.SIGKILL)
        wait_for_health(server.address, NOT_SERVING)
        with Client(server.address, timeout=30) as client:
            start = time.monotonic()
            with pytest.raises(PipeserveError) as refused:
                client.classify(["hello"])
            refused_ms = (time.monotonic() - start) * 1000
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            wait_for_health(server.address, SERVING)
            assert client.classify(["hello"])[0][0].label in ("NEGATIVE", "POSITIVE")
        print(f"\nno worker alive: UNAVAILABLE in {refused_ms:.1f} ms")


def test_full_queue_refuses_at_once_with_retry_hint(tiny_distilbert):
    with serving(tiny_distilbert, "--max-queued-items", "4") as server:
        worker = workers(server.address)[0]
        with Client(server.address, timeout=60) as client, ThreadPoolExecutor(5) as pool:
            with paused(worker.pid):
                busy = pool.submit(client.classify, ["held by the paused worker"])
                wait_until(lambda: workers(server.address)[0].busy)
                queued = [pool.submit(client.classify, [f"queued {i}"]) for i in range(4)]
                wait_until(lambda: _queued(server) == 4)
                with grpc.insecure_channel(server.address) as channel:
                    stub = pb_grpc.InferenceStub(channel)
                    request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="one too many")])
                    start = time.monotonic()
                    with pytest.raises(grpc.RpcError) as refused:
                        stub.Classify(request, timeout=30)
                    refused_ms = (time.monotonic() - start) * 1000
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queued_items=4" in refused.value.details()
            hint = dict(refused.value.trailing_metadata())
            assert int(hint["retry-after-ms"]) > 0
            # The same delay in the google.rpc.Status trailer, as RetryInfo.
            status = status_pb2.Status.FromString(hint["grpc-status-details-bin"])
            assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry)
            assert retry.retry_delay.ToMilliseconds() == int(hint["retry-after-ms"])
            # Everything accepted before the refusal completes once the worker resumes.
            assert busy.result()[0][0].label in ("NEGATIVE", "POSITIVE")
            assert all(call.result()[0][0].label for call in queued)
        print(f"\nfull queue: RESOURCE_EXHAUSTED in {refused_ms:.1f} ms")


def _queued(server: ServerProcess) -> int:
    with Client(server.address, timeout=10) as client:
        return client.model_info().queued_items


def test_expired_and_cancelled_items_are_never_computed(tiny_distilbert):
    with serving(tiny_distilbert) as server:
        worker = workers(server.address)[0]
        items_before = worker.items

        async def scenario() -> None:
            async with AsyncClient(server.address) as client:
                with paused(worker.pid):
                    busy = asyncio.create_task(client.classify(["held"], timeout=60))
                    await asyncio.to_thread(wait_until, lambda: workers(server.address)[0].busy)
                    expiring = [
                        asyncio.create_task(client.classify([f"late {i}"], timeout=0.3))
                        for i in range(3)
                    ]
                    cancelled = [
                        asyncio.create_task(client.classify([f"gone {i}"], timeout=60))
                        for i in range(2)
                    ]
                    await asyncio.to_thread(wait_until, lambda: _queued(server) == 5)
                    for task in cancelled:
                        task.cancel()
                    for task in expiring:
                        with pytest.raises(PipeserveError) as late:
                            await task
                        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
                await busy

        asyncio.run(scenario())
        # The worker computed the held item and nothing else.
        assert workers(server.address)[0].items == items_before + 1


def test_sigterm_drains_accepted_calls_and_exits_zero(tiny_distilbert):
    server = launch_server(tiny_distilbert, "--workers-per-device", "2", "--shutdown-grace-s", "30")
    try:
        pids = [w.pid for w in workers(server.address)]
        with Client(server.address, timeout=60) as client, ThreadPoolExecutor(8) as pool:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            accepted = []
            for busy in (1, 2):  # one call in flight on each paused worker
                accepted.append(pool.submit(client.classify, [f"in flight {busy}"]))
                wait_until(lambda n=busy: sum(w.busy for w in workers(server.address)) == n)
            accepted += [pool.submit(client.classify, [f"queued {i}"]) for i in range(6)]
            wait_until(lambda: _queued(server) == 6)
            with grpc.insecure_channel(server.address) as channel:
                # Watched from before SIGTERM: a draining server takes no new calls.
                updates = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=60
                )
                assert next(updates).status == SERVING
                server.proc.send_signal(signal.SIGTERM)
                assert next(updates).status == NOT_SERVING
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            results = [call.result() for call in accepted]
        assert len(results) == 8 and all(r[0][0].label for r in results)
        assert server.proc.wait(60) == 0
        with pytest.raises(PipeserveError) as closed, Client(server.address, timeout=5) as c:
            c.classify(["after shutdown"])
        assert closed.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
