"""Several front-end processes on one port (--frontends 2): each serves, they feed one queue
(batches hold items of both), and one that is killed loses none of the other's calls. Each
serves every model, those loaded and unloaded while serving (Admin) too. Checks that leave a
server as they found it share servers (every_task_two_front_ends, one_place_queue); those that
kill a front end, stop the server or load models have one each (`slow`)."""

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import psutil
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client import AdminClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import SEED_SENTENCES, in_process
from tests.servers import (
    OWN_CONNECTION,
    by_frontend,
    clients_by_frontend,
    frontend_of,
    launch_server,
    paused,
    queued,
    scrape,
    serving,
    wait_until,
)

pytestmark = pytest.mark.slow  # servers of two front ends or more, and of their own


def test_each_front_end_serves_and_their_items_share_batches(
    every_task_two_front_ends, tiny_logits
):
    sentences = list(tiny_logits)
    # `wait`, the tiny classifier with a long wait and room for two: two calls through two
    # front ends make one batch.
    clients = clients_by_frontend(every_task_two_front_ends.address)
    try:
        assert all(c.model_info(model="wait").frontends == 2 for c in clients.values())
        (first, one), (second, other) = clients.items()
        assert first != second and os.getpid() not in (first, second)
        before = one.model_info(model="wait").workers[0].batches
        start = threading.Barrier(2)

        def call(client: Client, sentence: str) -> np.ndarray:
            start.wait()
            return client.forward([sentence], model="wait", outputs=["logits"]).logits[0]

        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(call, one, sentences[0])
            b = pool.submit(call, other, sentences[1])
            logits = [a.result(), b.result()]
        assert one.model_info(model="wait").workers[0].batches == before + 1
        for sentence, row in zip(sentences[:2], logits, strict=True):
            np.testing.assert_allclose(row, tiny_logits[sentence], rtol=0, atol=1e-5)
        # Fidelity through either front end, whatever the batching (`clf`: the same model).
        for client in (one, other):
            out = client.forward(sentences, model="clf", outputs=["logits"]).logits
            np.testing.assert_allclose(out, np.stack(list(tiny_logits.values())), atol=1e-5)
    finally:
        for client in clients.values():
            client.close()


def test_a_killed_front_end_loses_none_of_the_others_calls(tiny_distilbert, tiny_logits):
    sentences = list(tiny_logits)
    with serving(tiny_distilbert, "--frontends", "2") as server:
        clients = clients_by_frontend(server.address)
        (victim, doomed), (survivor, kept) = clients.items()
        outcomes: Counter[str] = Counter()
        wrong: list[str] = []
        lock = threading.Lock()
        killed = threading.Event()

        def caller(index: int) -> None:
            step = 0
            while step < 40 or not killed.is_set():
                sentence = sentences[(index * 7 + step) % len(sentences)]
                try:
                    out = kept.forward([sentence], outputs=["logits"]).logits[0]
                    code = "OK"
                    if not np.allclose(out, tiny_logits[sentence], atol=1e-5):
                        wrong.append(sentence)
                except PipeserveError as error:
                    code = error.code.name
                with lock:
                    outcomes[code] += 1
                step += 1

        try:
            with ThreadPoolExecutor(4) as pool:
                calls = [pool.submit(caller, i) for i in range(4)]
                wait_until(lambda: outcomes["OK"] >= 8)
                os.kill(victim, signal.SIGKILL)
                killed.set()
                for call in calls:
                    call.result()
            assert set(outcomes) == {"OK"}, outcomes
            assert wrong == []
            # Its own callers reconnect, to a front end that lives.
            assert doomed.classify(["through the killed front end"])[0][0].label
        finally:
            for client in clients.values():
                client.close()
        # It is respawned: new connections reach two live front ends again.
        wait_until(lambda: survivor != frontend_of(server.address) != victim, timeout=90)
        assert len(clients_by_frontend(server.address)) == 2


def _gone(pid: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    return True


def test_a_killed_fork_server_is_no_front_ends_or_workers_death(tiny_distilbert, tiny_logits):
    """The front ends and workers forked from the fork server outlive it if it is killed (the
    OOM killer may pick it): none is taken for dead or started twice, a worker that dies later
    is respawned from a fork server started anew, and SIGTERM still drains them all."""
    sentence = next(iter(tiny_logits))
    server = launch_server(tiny_distilbert, "--frontends", "2")
    try:
        fork_server = next(
            child
            for child in psutil.Process(server.proc.pid).children()
            if "forkserver" in " ".join(child.cmdline())
        )
        clients = clients_by_frontend(server.address)
        one = next(iter(clients.values()))
        worker = one.model_info().workers[0].pid
        fork_server.kill()
        wait_until(lambda: _gone(fork_server.pid))  # its pipes closed
        for pid, client in clients.items():
            logits = client.forward([sentence], outputs=["logits"]).logits[0]
            np.testing.assert_allclose(logits, tiny_logits[sentence], atol=1e-5)
            assert client.model_info().frontend_pid == pid
        assert one.model_info().workers[0].pid == worker
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: one.model_info().workers[0].pid not in (0, worker), timeout=90)
        wait_until(lambda: one.model_info().workers[0].ready)
        logits = one.forward([sentence], outputs=["logits"]).logits[0]
        np.testing.assert_allclose(logits, tiny_logits[sentence], atol=1e-5)
        for client in clients.values():
            client.close()
    finally:
        code = server.stop()
    assert code == 0
    assert [line for line in server.log if "front end" in line and "died" in line] == []
    wait_until(lambda: all(_gone(pid) for pid in clients))


@pytest.mark.parametrize("whole_group", [False, True], ids=["server", "process group"])
def test_sigterm_drains_every_front_end_and_exits_zero(tiny_distilbert, whole_group):
    """SIGTERM to the server alone, or to its whole process group as systemd and a terminal
    send it: the front ends and the fork server they came from ignore it, and the server
    drains them, a call still queued (a batch waits 3 s for a second item) answered."""
    flags = ("--frontends", "2", "--shutdown-grace-s", "30")
    batching = ("--max-batch-size", "2", "--max-wait-ms", "3000")
    with serving(tiny_distilbert, *flags, *batching, own_group=whole_group) as server:
        clients = clients_by_frontend(server.address)
        try:
            with (
                grpc.insecure_channel(server.address) as channel,
                ThreadPoolExecutor(len(clients)) as pool,
            ):
                updates = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(), timeout=60
                )
                assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
                # Two at once: one batch, cut as it fills.
                results = list(pool.map(lambda c: c.classify(["before"]), clients.values()))
                queued_call = pool.submit(next(iter(clients.values())).classify, ["queued"])
                wait_until(lambda: queued(server) == 1)
                started = time.monotonic()
                if whole_group:
                    os.killpg(server.proc.pid, signal.SIGTERM)
                else:
                    server.proc.send_signal(signal.SIGTERM)
                assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
                results.append(queued_call.result(timeout=60))
            assert server.proc.wait(60) == 0
            assert time.monotonic() - started < 30
            assert all(r[0][0].label for r in results)
            server.stop()  # its log complete
            assert not [line for line in server.log if "died" in line]
        finally:
            for client in clients.values():
                client.close()


def test_the_main_process_serves_the_metrics_of_every_front_end(every_task_two_front_ends):
    url = every_task_two_front_ends.metrics_url
    model = ("model", "clf")
    requests = ("pipeserve_requests_total", (("code", "OK"), model, ("rpc", "Classify")))
    items = ("pipeserve_items_total", (model, ("rpc", "Classify")))
    batched = ("pipeserve_batch_size_sum", (model,))
    before = scrape(url)
    clients = clients_by_frontend(every_task_two_front_ends.address)
    try:
        for count, client in enumerate(clients.values(), start=2):
            for _ in range(count):
                client.classify(["one", "two"])
    finally:
        for client in clients.values():
            client.close()
    metrics = scrape(url)
    # 2 calls through one front end and 3 through the other, counted together.
    assert metrics[requests] - before.get(requests, 0) == 5
    assert metrics[items] - before.get(items, 0) == 10
    assert metrics[batched] - before.get(batched, 0) == 10
    assert metrics[("pipeserve_workers_alive", (model,))] == 1


def test_a_full_queue_refuses_through_any_front_end_with_a_retry_hint(one_place_queue):
    clients = clients_by_frontend(one_place_queue.address)
    (_, one), (_, other) = clients.items()
    channels = by_frontend(
        lambda: grpc.insecure_channel(one_place_queue.address, options=OWN_CONNECTION),
        lambda channel: (
            InferenceStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=60).frontend_pid
        ),
    )
    worker = one.model_info().workers[0]
    request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="one too many")])
    try:
        with ThreadPoolExecutor(2) as pool, paused(worker.pid):
            running = pool.submit(one.classify, ["held by the paused worker"])
            wait_until(lambda: one.model_info().workers[0].busy)
            waiting = pool.submit(one.classify, ["waits for the worker"])
            wait_until(lambda: other.model_info().queued_items == 1)
            refusals = []
            for channel in channels.values():
                start = time.monotonic()
                with pytest.raises(grpc.RpcError) as refused:
                    InferenceStub(channel).Classify(request, timeout=30)
                refused_ms = (time.monotonic() - start) * 1000
                refusals.append(refused.value)
        for refused in refusals:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queued_items=1" in refused.details()
            hint = dict(refused.trailing_metadata())
            assert int(hint["retry-after-ms"]) > 0
            # The same delay in the google.rpc.Status trailer, as RetryInfo.
            status = status_pb2.Status.FromString(hint["grpc-status-details-bin"])
            assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            retry = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(retry)
            assert retry.retry_delay.ToMilliseconds() == int(hint["retry-after-ms"])
        # Everything accepted before the refusals completes once the worker resumes.
        assert running.result()[0][0].label and waiting.result()[0][0].label
        print(f"\nfull queue: RESOURCE_EXHAUSTED in {refused_ms:.1f} ms")
    finally:
        for connection in (*clients.values(), *channels.values()):
            connection.close()


_SERVICE = "pipeserve.v1.Inference"
_SENTENCES = [
    *SEED_SENTENCES,
    "A quiet film that stays with you.",
    "Two hours I will never get back.",
    "The cast is fine; the script is not.",
]


def _worst(output, name: str, expected: list[np.ndarray]) -> float:
    """The largest difference between a Forward's output `name` and the in-process rows."""
    worst = 0.0
    for i, row in enumerate(expected):
        if name == "last_hidden_state":
            assert output.sequence_lengths[i] == len(row)
        worst = max(worst, float(np.abs(output[name][i][: len(row)] - row).max()))
    return worst


class _FrontEnds:
    """A client and a health stub on each of the two front ends of the server at `address`."""

    def __init__(self, address: str) -> None:
        self.clients = clients_by_frontend(address)
        self._channels = by_frontend(
            lambda: grpc.insecure_channel(address, options=OWN_CONNECTION),
            lambda channel: (
                InferenceStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=60).frontend_pid
            ),
        )
        assert set(self.clients) == set(self._channels)

    def health(self, service: str) -> list[int]:
        """`service`'s health status in each front end."""
        request = health_pb2.HealthCheckRequest(service=service)
        return [
            health_pb2_grpc.HealthStub(channel).Check(request, timeout=30).status
            for channel in self._channels.values()
        ]

    def close(self) -> None:
        for connection in (*self.clients.values(), *self._channels.values()):
            connection.close()


def test_several_models_and_the_admin_service_through_each_front_end(
    tiny_distilbert, tiny_bert, tmp_path
):
    """--frontends 2 with two models and the Admin service: each model answers as in-process
    through each front end; a model loaded while callers use another is served by both front
    ends when LoadModel returns (and by a front end respawned since), and NOT_FOUND through
    both once UnloadModel returns."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    (logits,) = in_process(
        tiny_distilbert, AutoModelForSequenceClassification, _SENTENCES, "logits"
    )
    (hidden,) = in_process(tiny_bert, AutoModel, _SENTENCES, "last_hidden_state")
    admin_file = tmp_path / "admin"
    admin_file.write_text("admin-secret\n")
    serving_ = health_pb2.HealthCheckResponse.SERVING
    flags = ("--model", f"enc={tiny_bert}", "--frontends", "2")
    with serving(f"clf={tiny_distilbert}", *flags, "--admin-token-file", str(admin_file)) as server:
        fronts = _FrontEnds(server.address)
        admin = AdminClient(server.address, token="admin-secret")
        try:
            for client in fronts.clients.values():
                assert client.model_info(model="enc").frontends == 2
                clf = client.forward(_SENTENCES, model="clf", outputs=["logits"])
                enc = client.forward(_SENTENCES, model="enc", outputs=["last_hidden_state"])
                assert _worst(clf, "logits", logits) <= 1e-5
                assert _worst(enc, "last_hidden_state", hidden) <= 1e-5
            for service in ("", _SERVICE, f"{_SERVICE}/clf", f"{_SERVICE}/enc"):
                assert fronts.health(service) == [serving_, serving_]

            stop = threading.Event()

            def call_clf(client: Client) -> int:
                """Calls `clf` until stopped; returns the calls, each checked."""
                calls = 0
                while not stop.is_set() or calls == 0:
                    sentence = _SENTENCES[calls % len(_SENTENCES)]
                    out = client.forward([sentence], model="clf", outputs=["logits"])
                    assert _worst(out, "logits", [logits[calls % len(_SENTENCES)]]) <= 1e-5
                    calls += 1
                return calls

            with ThreadPoolExecutor(2) as pool:
                callers = [pool.submit(call_clf, client) for client in fronts.clients.values()]
                try:
                    info = admin.load_model("late", str(tiny_distilbert))
                    # At once, through either front end.
                    for client in fronts.clients.values():
                        late = client.forward(_SENTENCES, model="late", outputs=["logits"])
                        assert _worst(late, "logits", logits) <= 1e-5
                    assert fronts.health(f"{_SERVICE}/late") == [serving_, serving_]
                    assert fronts.health("") == [serving_, serving_]
                finally:
                    stop.set()
                calls = [caller.result() for caller in callers]
            print(f"calls of clf through each front end during the load: {calls}")
            assert info.name == "late" and [w.ready for w in info.workers] == [True]

            # A front end respawned after the load serves the loaded model too.
            victim, survivor = fronts.clients
            os.kill(victim, signal.SIGKILL)

            def respawned() -> bool:
                try:
                    return frontend_of(server.address) not in (victim, survivor)
                except PipeserveError as error:  # a connection the killed one had accepted
                    assert error.code is grpc.StatusCode.UNAVAILABLE
                    return False

            wait_until(respawned, timeout=90)
            fronts.close()
            fronts = _FrontEnds(server.address)
            for client in fronts.clients.values():
                late = client.forward(_SENTENCES, model="late", outputs=["logits"])
                assert _worst(late, "logits", logits) <= 1e-5
            wait_until(lambda: fronts.health("") == [serving_, serving_])
            assert fronts.health(f"{_SERVICE}/late") == [serving_, serving_]

            assert admin.unload_model("late") == 0
            for client in fronts.clients.values():
                with pytest.raises(PipeserveError) as refused:
                    client.forward(["gone"], model="late")
                assert refused.value.code is grpc.StatusCode.NOT_FOUND
                assert "served models: clf, enc" in refused.value.details
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert fronts.health(f"{_SERVICE}/late") == [not_serving, not_serving]
            assert fronts.health("") == [serving_, serving_]
        finally:
            admin.close()
            fronts.close()
