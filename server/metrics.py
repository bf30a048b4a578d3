"""Prometheus metrics, served on their own HTTP port (--metrics-port).

Calls are counted by a wrapper around each RPC (`edge/handlers.py`); stage times come from the
request path; queue depth and per-worker counters are read from the queue, the supervisor and
the dispatcher at scrape time, so the data path carries no bookkeeping of its own for them.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pipeserve.wire import status_code

if TYPE_CHECKING:
    from pipeserve.server.engine.dispatch import Dispatcher
    from pipeserve.server.engine.queue import Queue
    from pipeserve.server.workers.supervisor import Supervisor

# Milliseconds to minutes: a GPU forward of one sentence up to a long CPU queue wait.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class _PoolCollector(Collector):
    """Reads queue depth and worker counters when Prometheus scrapes."""

    def __init__(self, queue: "Queue", workers: "Supervisor", dispatcher: "Dispatcher") -> None:
        self._queue = queue
        self._workers = workers
        self._dispatcher = dispatcher

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "pipeserve_queue_depth", "Items waiting for a worker.", value=self._queue.waiting
        )
        yield GaugeMetricFamily(
            "pipeserve_workers_alive",
            "Worker processes ready to take batches.",
            value=self._workers.alive,
        )
        restarts = CounterMetricFamily(
            "pipeserve_worker_restarts",
            "Worker processes respawned after dying.",
            labels=["worker"],
        )
        busy = CounterMetricFamily(
            "pipeserve_worker_busy_seconds",
            "Time workers spent computing batches.",
            labels=["worker"],
        )
        for worker_id, count in self._workers.restarts.items():
            restarts.add_metric([str(worker_id)], count)
        for worker_id, stats in self._dispatcher.stats.items():
            busy.add_metric([str(worker_id)], stats.busy_s)
        yield restarts
        yield busy


class Metrics:
    """The server's metrics. A process holds the part it observes: `calls` (requests, items,
    latency, stages) in a front end, `batches` (and the pool's gauges) with the engine. With
    several front-end processes, theirs are kept in files (prometheus_client's multiprocess
    mode) and served by the main process beside its own."""

    def __init__(
        self, *, calls: bool = True, batches: bool = True, frontends_dir: str | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        if frontends_dir is not None:
            MultiProcessCollector(self.registry, frontends_dir)
        if calls:
            self._create_call_metrics()
        if batches:
            self.batch_size = Histogram(
                "pipeserve_batch_size",
                "Sequences per batch sent to a worker.",
                buckets=_SIZES,
                registry=self.registry,
            )
            self.batch_tokens = Histogram(
                "pipeserve_batch_tokens",
                "Padded tokens (longest x sequences) per batch.",
                buckets=_TOKENS,
                registry=self.registry,
            )

    def _create_call_metrics(self) -> None:
        self.requests = Counter(
            "pipeserve_requests",
            "RPCs answered, by method and status code.",
            ["rpc", "code"],
            registry=self.registry,
        )
        self.items = Counter(
            "pipeserve_items", "Inputs received, by method.", ["rpc"], registry=self.registry
        )
        self.latency = Histogram(
            "pipeserve_request_duration_seconds",
            "RPC latency in the server, by method.",
            ["rpc"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "pipeserve_stage_duration_seconds",
            "Time per request in each stage: tokenize, queue, forward, postprocess.",
            ["stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        # Label children looked up once: a lookup per call costs more than the observation.
        self._stages = {
            stage: self.stage.labels(stage)
            for stage in ("tokenize", "queue", "forward", "postprocess")
        }

    def watch(self, queue: "Queue", workers: "Supervisor", dispatcher: "Dispatcher") -> None:
        self.registry.register(_PoolCollector(queue, workers, dispatcher))

    def observe_stages(self, **milliseconds: float) -> None:
        for stage, ms in milliseconds.items():
            self._stages[stage].observe(ms / 1000)

    def observe_batch(self, size: int, padded_tokens: int) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint in a thread; returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port

    def _counter_by_code(self, rpc: str) -> Callable[[str], Any]:
        children: dict[str, Any] = {}

        def child(code: str) -> Any:
            if code not in children:
                children[code] = self.requests.labels(rpc, code)
            return children[code]

        return child

    def count_unary(
        self, rpc: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """`behavior` counted and timed as RPC `rpc`, by its final status code."""
        items = self.items.labels(rpc)
        latency = self.latency.labels(rpc)
        done = self._counter_by_code(rpc)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            items.inc(len(getattr(request, "inputs", ())))
            start, failed = time.perf_counter(), True
            try:
                response = await behavior(request, context)
                failed = False
                return response
            finally:
                done(_code(context, failed)).inc()
                latency.observe(time.perf_counter() - start)

        return unary

    def count_stream(
        self, rpc: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        """`behavior`, a stream, counted and timed as RPC `rpc`; items counted per message."""
        items = self.items.labels(rpc)
        latency = self.latency.labels(rpc)
        done = self._counter_by_code(rpc)

        async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for message in requests:
                inner = getattr(message, "request", None)
                items.inc(len(getattr(inner, "inputs", ())))
                yield message

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, failed = time.perf_counter(), True
            try:
                async for response in behavior(counted(requests), context):
                    yield response
                failed = False
            finally:
                done(_code(context, failed)).inc()
                latency.observe(time.perf_counter() - start)

        return stream


def _code(context: grpc.aio.ServicerContext, failed: bool) -> str:
    """The call's status name. A call that raised without setting one was cancelled."""
    code = context.code()
    if code is None:
        return "CANCELLED" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else status_code(code).name
