"""Client-side balancing against real replicas: one client spreads calls over several and
keeps working when one goes away.

Replicas whose health is NOT_SERVING (loading, no live worker, draining) get no calls, and
since every pipeserve call is idempotent, a call that a replica refuses anyway is sent to the
next one instead of failing. How the client builds its targets and options:
tests/unit/test_balancing.py."""

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pipeserve.client import AsyncClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.servers import ServerProcess, launch_server

TEXT = "I've been waiting for a HuggingFace course my whole life."


def _items(address: str) -> int:
    """Items a server's workers have computed, asked of that server alone."""
    with Client(address, timeout=10) as direct:
        return sum(w.items for w in direct.model_info().workers)


@pytest.fixture
def two_servers(tiny_distilbert) -> Iterator[list[ServerProcess]]:
    servers = [launch_server(tiny_distilbert, "--workers-per-device", "1") for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.slow
def test_one_client_spreads_calls_and_survives_a_stopped_replica(two_servers):
    first, second = two_servers
    with Client([first.address, second.address], timeout=30) as client:
        # round_robin sends calls to every connected replica in turn; the second connection
        # may come up a few calls after the first, so go on until both have served.
        calls = 0
        while calls < 20 or not (_items(first.address) and _items(second.address)):
            assert calls < 200, "calls never reached both replicas"
            assert client.classify([TEXT])[0][0].label in ("POSITIVE", "NEGATIVE")
            calls += 1
        served = [_items(first.address), _items(second.address)]
        assert all(served), served
        assert sum(served) == calls  # each call computed once, on one replica

        assert second.stop() == 0
        # The same client goes on with the replica that is left; no call fails.
        for _ in range(10):
            assert client.classify([TEXT])[0][0].label in ("POSITIVE", "NEGATIVE")
        assert _items(first.address) == served[0] + 10


class _Refusing(pb_grpc.InferenceServicer):
    """A replica that refuses Classify with UNAVAILABLE, as pipeserve does with no live worker."""

    def __init__(self) -> None:
        self.refused = 0

    def Classify(self, request, context):
        self.refused += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "no worker is alive")

    def ModelInfo(self, request, context):
        return pb.ModelInfoResponse(model="refusing")


def _refusing_replica(status: int) -> Iterator[tuple[str, _Refusing]]:
    servicer = _Refusing()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("pipeserve.v1.Inference", status)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


@pytest.fixture
def refusing_replica() -> Iterator[tuple[str, _Refusing]]:
    """Refuses every Classify while its health still says SERVING (not caught up yet)."""
    yield from _refusing_replica(health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def unhealthy_replica() -> Iterator[tuple[str, _Refusing]]:
    """NOT_SERVING in its health, as pipeserve is while loading, and refuses every Classify."""
    yield from _refusing_replica(health_pb2.HealthCheckResponse.NOT_SERVING)


def _reach_both(client: Client) -> None:
    """Calls until both replicas have answered: round_robin then has both connections up."""
    seen = set()
    for _ in range(200):
        seen.add(client.model_info().model == "refusing")
        if len(seen) == 2:
            return
    raise AssertionError("calls never reached both replicas")


def test_a_refusing_replica_costs_no_failed_call(address, refusing_replica):
    refusing, servicer = refusing_replica
    with Client([refusing, address], timeout=30) as client:
        _reach_both(client)
        for _ in range(20):
            assert client.classify([TEXT])[0][0].label in ("POSITIVE", "NEGATIVE")
    assert servicer.refused >= 5  # round_robin kept sending it calls; each was retried
    # Without the retry (the caller's choice), the refused calls fail.
    options = [("grpc.enable_retries", 0)]
    with Client([refusing, address], timeout=30, channel_options=options) as client:
        _reach_both(client)
        failures = []
        for _ in range(20):
            try:
                client.classify([TEXT])
            except PipeserveError as error:
                failures.append(error.code)
        assert failures
        assert set(failures) == {grpc.StatusCode.UNAVAILABLE}


def test_an_unhealthy_replica_gets_no_calls(address, unhealthy_replica):
    unhealthy, servicer = unhealthy_replica
    with Client([unhealthy, address], timeout=30) as client:
        for _ in range(20):
            assert client.classify([TEXT])[0][0].label in ("POSITIVE", "NEGATIVE")
        assert all(client.model_info().model != "refusing" for _ in range(10))
    assert servicer.refused == 0


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_dns_target(address):
    port = _port(address)
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo("localhost", port)}
    except OSError as error:
        pytest.skip(f"localhost does not resolve: {error}")
    if "127.0.0.1" not in resolved:
        pytest.skip(f"localhost resolves to {sorted(resolved)}, not 127.0.0.1")
    # Every address localhost resolves to is a replica; those that refuse (::1 here, the server
    # listens on 127.0.0.1) are left out by round_robin.
    with Client(f"dns:///localhost:{port}", timeout=30) as client:
        for _ in range(5):
            assert client.classify([TEXT])[0][0].label in ("POSITIVE", "NEGATIVE")


@pytest.mark.asyncio
async def test_async_client_takes_a_list(address, refusing_replica):
    refusing, servicer = refusing_replica
    async with AsyncClient([refusing, address], timeout=30) as client:
        seen = {(await client.model_info()).model == "refusing" for _ in range(50)}
        assert seen == {True, False}, "calls never reached both replicas"
        for _ in range(10):
            results = await client.classify([TEXT])
            assert results[0][0].label in ("POSITIVE", "NEGATIVE")
    assert servicer.refused > 0
