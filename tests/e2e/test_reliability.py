"""Faults against real servers: killed workers and SIGTERM, workers paused with SIGSTOP to hold
work in flight on purpose. What needs no process to show is tested in process, in
tests/unit/test_reliability.py, tests/unit/test_engine_faults.py and
tests/unit/test_serving_path.py (a full queue's gRPC trailers through the front ends in
tests/e2e/test_frontends.py)."""

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
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client import Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.servers import ServerProcess, launch_server, queued, scrape, serving, wait_until, workers

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


@pytest.mark.slow
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


def _new_call(server: ServerProcess) -> grpc.StatusCode:
    """How a Classify on a new connection ends."""
    with grpc.insecure_channel(server.address) as channel:
        request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="a new call")])
        try:
            pb_grpc.InferenceStub(channel).Classify(request, timeout=2)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
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
