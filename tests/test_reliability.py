"""Faults and overload against real servers: dead workers, a full queue, deadlines,
cancellation and SIGTERM. Workers are paused with SIGSTOP to hold work in flight on purpose.
Hung workers, which need no process to show, are tested in process (test_engine_faults.py)."""

import asyncio
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client import AsyncClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc

from .conftest import (
    ServerProcess,
    launch_server,
    paused,
    queued,
    scrape,
    serving,
    wait_until,
    workers,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
_RESPAWNING = re.compile(r"respawning in ([\d.]+) s")
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_for_health(address: str, status: int, timeout: float = 60) -> None:
    """Blocks on the health Watch stream until the server reports `status`."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for update in stub.Watch(health_pb2.HealthCheckRequest(), timeout=timeout):
            if update.status == status:
                return


@pytest.mark.slow
def test_killed_worker_loses_no_call_and_is_respawned(tiny_distilbert, tiny_logits):
    sentences = list(tiny_logits)
    with serving(tiny_distilbert, "--workers-per-device", "2", "--max-batch-size", "4") as server:
        victim = workers(server.address)[0]
        outcomes: Counter[str] = Counter()
        wrong: list[str] = []
        lock = threading.Lock()

        def caller(index: int) -> None:
            with Client(server.address, timeout=30) as client:
                for step in range(25):
                    sentence = sentences[(index * 25 + step) % len(sentences)]
                    try:
                        out = client.forward([sentence], outputs=["logits"])
                        code = "OK"
                        if not np.allclose(out.logits[0], tiny_logits[sentence], rtol=0, atol=1e-5):
                            wrong.append(sentence)
                    except PipeserveError as error:
                        code = error.code.name
                    with lock:
                        outcomes[code] += 1

        with ThreadPoolExecutor(8) as pool:
            # Stopped, the victim keeps the batch it is given until the SIGKILL: the kill lands
            # mid-batch for certain, and that batch must be retried on the other worker.
            os.kill(victim.pid, signal.SIGSTOP)
            calls = [pool.submit(caller, i) for i in range(8)]
            wait_until(lambda: workers(server.address)[0].busy)
            killed_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            for call in calls:
                call.result()

        # The other worker lived throughout, so no call may fail.
        assert outcomes == {"OK": 8 * 25}, outcomes
        assert wrong == []
        wait_until(lambda: workers(server.address)[0].ready)
        recovered_s = time.monotonic() - killed_at
        respawned = workers(server.address)[0]
        assert respawned.restarts == 1 and respawned.pid != victim.pid
        print(f"\nworker killed mid-batch: {dict(outcomes)}; ready again in {recovered_s:.2f} s")

        # The respawned worker serves: idle workers take turns, so it gets some of these.
        before = workers(server.address)[0].batches
        with Client(server.address, timeout=30) as client:
            for sentence in sentences[:4]:
                out = client.forward([sentence], outputs=["logits"])
                np.testing.assert_allclose(out.logits[0], tiny_logits[sentence], atol=1e-5)
        assert workers(server.address)[0].batches > before


def _respawn_delays(server: ServerProcess) -> list[float]:
    """The back-off of each respawn so far, from the server's log."""
    return [float(m.group(1)) for line in server.log if (m := _RESPAWNING.search(line))]


def test_no_live_worker_means_unavailable_at_once_and_not_serving(tiny_distilbert):
    with serving(tiny_distilbert, "--metrics-port", "0") as server:
        alive = ("pipeserve_workers_alive", (("model", tiny_distilbert.name),))
        assert scrape(server.metrics_url)[alive] == 1
        os.kill(workers(server.address)[0].pid, signal.SIGKILL)
        wait_for_health(server.address, NOT_SERVING)
        assert scrape(server.metrics_url)[alive] == 0
        with Client(server.address, timeout=30) as client:
            start = time.monotonic()
            with pytest.raises(PipeserveError) as refused:
                client.classify(["hello"])
            refused_ms = (time.monotonic() - start) * 1000
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            wait_for_health(server.address, SERVING)
            assert client.classify(["hello"])[0][0].label in ("NEGATIVE", "POSITIVE")
        assert scrape(server.metrics_url)[alive] == 1
        print(f"\nno worker alive: UNAVAILABLE in {refused_ms:.1f} ms")

        # Dying again soon after its respawn, the worker waits longer before the next one.
        os.kill(workers(server.address)[0].pid, signal.SIGKILL)
        wait_until(lambda: len(_respawn_delays(server)) == 2)
        first, second = _respawn_delays(server)
        assert second > first > 0
        wait_for_health(server.address, SERVING)
        assert workers(server.address)[0].restarts == 2


def test_max_wait_holds_a_batch_open_until_it_is_full(tiny_distilbert):
    """--max-wait-ms: a free worker waits for more items (here up to a minute) before it
    takes a batch, so calls sent one by one, each queued before the next, go as one batch."""
    with serving(tiny_distilbert, "--max-wait-ms", "60000", "--max-batch-size", "4") as server:
        before = workers(server.address)[0]
        with Client(server.address, timeout=120) as client, ThreadPoolExecutor(4) as pool:
            calls = []
            for count in range(1, 4):
                calls.append(pool.submit(client.classify, [f"sentence number {count}"]))
                # Held in the queue, not sent to the idle worker.
                wait_until(lambda n=count: queued(server) == n)
            calls.append(pool.submit(client.classify, ["the fourth fills the batch"]))
            assert all(len(call.result()) == 1 for call in calls)
        after = workers(server.address)[0]
        assert (after.batches - before.batches, after.items - before.items) == (1, 4)


def test_full_queue_refuses_at_once_with_retry_hint(tiny_distilbert):
    with serving(tiny_distilbert, "--max-queued-items", "4") as server:
        worker = workers(server.address)[0]
        with Client(server.address, timeout=60) as client, ThreadPoolExecutor(5) as pool:
            with paused(worker.pid):
                busy = pool.submit(client.classify, ["held by the paused worker"])
                wait_until(lambda: workers(server.address)[0].busy)
                waiting = [pool.submit(client.classify, [f"queued {i}"]) for i in range(4)]
                wait_until(lambda: queued(server) == 4)
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
            assert all(call.result()[0][0].label for call in waiting)
        print(f"\nfull queue: RESOURCE_EXHAUSTED in {refused_ms:.1f} ms")


def test_expired_and_cancelled_items_are_never_computed(tiny_distilbert):
    with serving(tiny_distilbert) as server:
        worker = workers(server.address)[0]
        items_before = worker.items

        async def scenario() -> None:
            async with AsyncClient(server.address) as client:
                with paused(worker.pid):
                    busy = asyncio.create_task(client.classify(["held"], timeout=60))
                    await asyncio.to_thread(wait_until, lambda: workers(server.address)[0].busy)
                    # Long enough to be queued first however loaded the machine; checked
                    # below, since an item that expired before it was queued proves nothing.
                    expiring = [
                        asyncio.create_task(client.classify([f"late {i}"], timeout=3))
                        for i in range(3)
                    ]
                    cancelled = [
                        asyncio.create_task(client.classify([f"gone {i}"], timeout=60))
                        for i in range(2)
                    ]
                    await asyncio.to_thread(wait_until, lambda: queued(server) == 5)
                    assert not any(task.done() for task in expiring)
                    for task in cancelled:
                        task.cancel()
                    for task in expiring:
                        with pytest.raises(PipeserveError) as late:
                            await task
                        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
                    # Once the deadline has passed nothing waits, not even the batch in the
                    # worker's inbox. grpc cancels the calls at their deadline, so this holds
                    # even for a server that ignored deadlines: tests/test_deadlines.py checks
                    # the server's own expiry.
                    await asyncio.to_thread(wait_until, lambda: queued(server) == 0)
                await busy

        asyncio.run(scenario())
        # The worker computed the held item and nothing else.
        assert workers(server.address)[0].items == items_before + 1


def _new_call(server: ServerProcess) -> grpc.StatusCode:
    """How a Classify on a new connection ends."""
    with grpc.insecure_channel(server.address) as channel:
        request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="a new call")])
        try:
            pb_grpc.InferenceStub(channel).Classify(request, timeout=2)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


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
            wait_until(lambda: queued(server) == 6)
            with grpc.insecure_channel(server.address) as channel:
                # Watched from before SIGTERM: a draining server takes no new calls.
                updates = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=60
                )
                assert next(updates).status == SERVING
                server.proc.send_signal(signal.SIGTERM)
                assert next(updates).status == NOT_SERVING
            # Draining (the accepted calls are held by the paused workers): new calls are
            # refused. Health turns first, so a call may slip in just before; it is left to
            # its short deadline, and the next one tried.
            wait_until(lambda: _new_call(server) == grpc.StatusCode.UNAVAILABLE)
            assert not any(call.done() for call in accepted)
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
