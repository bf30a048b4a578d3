"""Prometheus metrics, served on their own HTTP port (--metrics-port).

Calls are counted by a wrapper around each RPC (`edge/handlers.py`); stage times come from the
request path; queue depth and per-worker counters are read from the queue, the supervisor and
the dispatcher at scrape time, so the data path carries no bookkeeping of its own for them.
Every metric has a `model` label: the served model's name (empty for a call that names no
served model).
"""

import asyncio
import hmac
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
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
# Prefix of the front ends' metrics folders in the temporary directory.
_METRICS_DIR = "pipeserve-metrics-"
# How often a front end's event loop is timed (`watch_loop_lag`).
_LAG_PERIOD_S = 0.1
# The histograms whose first label is a model's name, made as soon as it is served.
_PER_MODEL = ("stage", "batch_size", "batch_tokens")


def frontends_metrics_dir() -> str:
    """A new folder for the front ends' metrics files, named after this process. Folders of
    servers that no longer run (killed before they could remove theirs) are removed first."""
    for old in Path(tempfile.gettempdir()).glob(f"{_METRICS_DIR}*"):
        pid = old.name.removeprefix(_METRICS_DIR).partition("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{_METRICS_DIR}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class _PoolCollector(Collector):
    """Reads each model's queue depth and worker counters when Prometheus scrapes."""

    def __init__(self) -> None:
        self.pools: dict[str, tuple[Queue, Supervisor, Dispatcher]] = {}

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "pipeserve_queue_depth", "Items waiting for a worker.", labels=["model"]
        )
        alive = GaugeMetricFamily(
            "pipeserve_workers_alive", "Worker processes ready to take batches.", labels=["model"]
        )
        restarts = CounterMetricFamily(
            "pipeserve_worker_restarts",
            "Worker processes respawned after dying.",
            labels=["model", "worker"],
        )
        busy = CounterMetricFamily(
            "pipeserve_worker_busy_seconds",
            "Time workers spent computing batches.",
            labels=["model", "worker"],
        )
        for model, (queue, workers, dispatcher) in list(self.pools.items()):
            depth.add_metric([model], queue.waiting)
            alive.add_metric([model], workers.alive)
            for worker_id, count in workers.restarts.items():
                restarts.add_metric([model, str(worker_id)], count)
            for worker_id, stats in dispatcher.stats.items():
                busy.add_metric([model, str(worker_id)], stats.busy_s)
        yield from (depth, alive, restarts, busy)


class ModelMetrics:
    """The stage and batch observations of one model, its label children looked up once."""

    def __init__(self, metrics: "Metrics", model: str) -> None:
        if hasattr(metrics, "stage"):
            self._stages = {
                stage: metrics.stage.labels(model, stage)
                for stage in ("tokenize", "queue", "forward", "postprocess")
            }
        if hasattr(metrics, "batch_size"):
            self._batch_size = metrics.batch_size.labels(model)
            self._batch_tokens = metrics.batch_tokens.labels(model)

    def observe_stages(self, **milliseconds: float) -> None:
        for stage, ms in milliseconds.items():
            self._stages[stage].observe(ms / 1000)

    def observe_batch(self, size: int, padded_tokens: int) -> None:
        self._batch_size.observe(size)
        self._batch_tokens.observe(padded_tokens)


class Metrics:
    """The server's metrics. A process holds the part it observes: `calls` (requests, items,
    latency, stages) in a front end, `batches` (and the pool's gauges) with the engine. With
    several front-end processes, theirs are kept in files (prometheus_client's multiprocess
    mode) and served by the main process beside its own."""

    def __init__(
        self,
        *,
        default_model: str = "",
        calls: bool = True,
        batches: bool = True,
        frontends_dir: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        # Names a call's `model` field may take as a label; anything else counts as "".
        self._default_model = default_model
        self._models: set[str] = set()
        self._pools = _PoolCollector()
        self.registry.register(self._pools)
        if frontends_dir is not None:
            MultiProcessCollector(self.registry, frontends_dir)
        if calls:
            self._create_call_metrics()
        if batches:
            self.batch_size = Histogram(
                "pipeserve_batch_size",
                "Sequences per batch sent to a worker.",
                ["model"],
                buckets=_SIZES,
                registry=self.registry,
            )
            self.batch_tokens = Histogram(
                "pipeserve_batch_tokens",
                "Tokens computed per batch, padding included (longest x sequences of each "
                "length bucket it runs as), or its real tokens where the worker packs them.",
                ["model"],
                buckets=_TOKENS,
                registry=self.registry,
            )

    def _create_call_metrics(self) -> None:
        self.requests = Counter(
            "pipeserve_requests",
            "RPCs answered, by model, method and status code.",
            ["model", "rpc", "code"],
            registry=self.registry,
        )
        self.items = Counter(
            "pipeserve_items",
            "Inputs received, by model and method.",
            ["model", "rpc"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pipeserve_request_duration_seconds",
            "RPC latency in the server, by model and method.",
            ["model", "rpc"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "pipeserve_event_loop_lag_seconds",
            "How late a front end's event loop ran a timer: time it spent on work that held "
            "every call.",
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "pipeserve_stage_duration_seconds",
            "Time per request in each stage: tokenize, queue, forward, postprocess.",
            ["model", "stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )

    def for_model(self, model: str) -> ModelMetrics:
        """Observations of served model `model`, whose name becomes a label value."""
        self._models.add(model)
        return ModelMetrics(self, model)

    def watch(
        self, model: str, queue: "Queue", workers: "Supervisor", dispatcher: "Dispatcher"
    ) -> None:
        self._pools.pools[model] = (queue, workers, dispatcher)

    def forget(self, model: str) -> None:
        """Model `model` is no longer served: its gauges go, and its name is no label value
        (its counters so far stay)."""
        self._pools.pools.pop(model, None)
        self._models.discard(model)

    def discard(self, model: str) -> None:
        """Model `model` never served (its LoadModel failed): forgotten with every series its
        name labels."""
        self.forget(model)
        for histogram in (getattr(self, name, None) for name in _PER_MODEL):
            if histogram is None:
                continue
            # prometheus_client lists a metric's label values only in its private table.
            for labels in [k for k in histogram._metrics if k[0] == model]:
                histogram.remove(*labels)

    def _model_label(self, request: Any) -> str:
        """The served model a request names, as a label (bounded: unknown names are "")."""
        # pipeserve.v1 names it `model`, the Open Inference Protocol `model_name`.
        asked = getattr(request, "model", "") or getattr(request, "model_name", "")
        name = asked or self._default_model
        return name if name in self._models else ""

    async def watch_loop_lag(self) -> None:
        """Observes, until cancelled, how late this process's event loop wakes from a short
        sleep: a stall of every call (health included) shows as lag."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(_LAG_PERIOD_S)
            self.loop_lag.observe(max(0.0, loop.time() - asked - _LAG_PERIOD_S))

    def serve(self, host: str, port: int, tokens: Sequence[bytes] = ()) -> int:
        """Starts the HTTP endpoint in a thread, answering /metrics alone (any other path is
        404), with `tokens` only to a scrape bearing one (`Authorization: Bearer TOKEN`, as
        Prometheus' scrape `authorization` sends it); returns the bound port."""
        app = make_wsgi_app(self.registry)

        def metrics_only(environ: dict, start_response: Callable) -> list[bytes]:
            if environ.get("PATH_INFO") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found: the metrics are at /metrics\n"]
            if tokens:
                scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
                matches = [hmac.compare_digest(token.encode(), t) for t in tokens]
                if scheme.lower() != "bearer" or not any(matches):
                    start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
                    return [b"missing or invalid bearer token\n"]
            return app(environ, start_response)

        server = make_server(
            host, port, metrics_only, ThreadingWSGIServer, handler_class=_SilentHandler
        )
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server.server_port

    def _children(self, metric: Any, *labels: str) -> Callable[..., Any]:
        """`metric.labels(...)` with `labels` last, each child looked up once: a lookup per
        call costs more than the observation."""
        children: dict[tuple[str, ...], Any] = {}

        def child(*first: str) -> Any:
            if first not in children:
                children[first] = metric.labels(*first, *labels)
            return children[first]

        return child

    def count_unary(
        self, rpc: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """`behavior` counted and timed as RPC `rpc`, by its final status code."""
        items = self._children(self.items, rpc)
        latency = self._children(self.latency, rpc)
        done = self._children(self.requests)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            model = self._model_label(request)
            items(model).inc(len(getattr(request, "inputs", ())))
            start, failed = time.perf_counter(), True
            try:
                response = await behavior(request, context)
                failed = False
                return response
            finally:
                done(model, rpc, call_code(context, failed)).inc()
                latency(model).observe(time.perf_counter() - start)

        return unary

    def count_stream(
        self, rpc: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        """`behavior`, a stream, counted and timed as RPC `rpc`; items counted per message by
        its model, the call by its first message's model."""
        items = self._children(self.items, rpc)
        latency = self._children(self.latency, rpc)
        done = self._children(self.requests)

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            first: list[str] = []

            async def counted() -> AsyncIterator[Any]:
                async for message in requests:
                    inner = getattr(message, "request", None)
                    model = self._model_label(inner)
                    first[:] = first or [model]
                    items(model).inc(len(getattr(inner, "inputs", ())))
                    yield message

            start, failed = time.perf_counter(), True
            try:
                async for response in behavior(counted(), context):
                    yield response
                failed = False
            finally:
                model = first[0] if first else self._model_label(None)
                done(model, rpc, call_code(context, failed)).inc()
                latency(model).observe(time.perf_counter() - start)

        return stream


def call_code(context: grpc.aio.ServicerContext, failed: bool) -> str:
    """The call's status name. A call that raised without setting one was cancelled."""
    code = context.code()
    if code is None:
        return "CANCELLED" if failed else "OK"
    return code.name if isinstance(code, grpc.StatusCode) else status_code(code).name
