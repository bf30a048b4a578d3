"""Prometheus metrics, served on their own HTTP port (--metrics-port).

Calls are counted by one interceptor; stage times come from the request path; queue depth
and per-worker counters are read from the queue and the pool at scrape time, so the data
path carries no bookkeeping of its own for them.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeserve.server.edge.handlers import with_behavior
from pipeserve.wire import status_code

if TYPE_CHECKING:
    from pipeserve.server.engine.queue import Queue
    from pipeserve.server.workers.pool import WorkerPool

# Milliseconds to minutes: a GPU forward of one sentence up to a long CPU queue wait.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class _PoolCollector(Collector):
    """Reads queue depth and worker counters when Prometheus scrapes."""

    def __init__(self, queue: "Queue", pool: "WorkerPool") -> None:
        self._queue = queue
        self._pool = pool

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily(
            "pipeserve_queue_depth", "Items waiting for a worker.", value=len(self._queue)
        )
        yield GaugeMetricFamily(
            "pipeserve_workers_alive",
            "Worker processes ready to take batches.",
            value=self._pool.alive,
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
        for worker_id, stats in self._pool.stats.items():
            restarts.add_metric([str(worker_id)], stats.restarts)
            busy.add_metric([str(worker_id)], stats.busy_s)
        yield restarts
        yield busy


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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

    def watch(self, queue: "Queue", pool: "WorkerPool") -> None:
        self.registry.register(_PoolCollector(queue, pool))

    def observe_stages(self, **milliseconds: float) -> None:
        for stage, ms in milliseconds.items():
            self.stage.labels(stage).observe(ms / 1000)

    def observe_batch(self, size: int, padded_tokens: int) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint in a thread; returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _MetricsInterceptor(self)


def _rpc_name(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def _code(context: grpc.aio.ServicerContext, failed: bool) -> str:
    """The call's status name. A call that raised without setting one was cancelled."""
    code = context.code()
    if code is None:
        return "CANCELLED" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else status_code(code).name


class _MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times the pipeserve RPCs (outermost, so it sees the final status)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/pipeserve."):
            return handler
        rpc = _rpc_name(handler_call_details.method)
        metrics = self._metrics

        def done(context: grpc.aio.ServicerContext, start: float, failed: bool) -> None:
            metrics.requests.labels(rpc, _code(context, failed)).inc()
            metrics.latency.labels(rpc).observe(time.perf_counter() - start)

        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                metrics.items.labels(rpc).inc(len(getattr(request, "inputs", ())))
                start, failed = time.perf_counter(), True
                try:
                    response = await behavior(request, context)
                    failed = False
                    return response
                finally:
                    done(context, start, failed)

            return with_behavior(handler, unary)
        if handler.stream_stream is not None:
            stream_behavior = handler.stream_stream

            async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
                async for message in requests:
                    inner = getattr(message, "request", None)
                    metrics.items.labels(rpc).inc(len(getattr(inner, "inputs", ())))
                    yield message

            async def stream(
                requests: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                start, failed = time.perf_counter(), True
                try:
                    async for response in stream_behavior(counted(requests), context):
                        yield response
                    failed = False
                finally:
                    done(context, start, failed)

            return with_behavior(handler, stream)
        return handler
