"""OpenTelemetry traces of the calls (`--tracing`, with `pip install 'pipeserve[tracing]'`):
one tree per call, across the front end, the engine and the worker that computed it.

    server span (edge/traced.py)          front end: the caller's traceparent is its parent
    ├── admission, tokenize               front end (requests/infer.py)
    ├── queue                             engine: from queued until its last item is sent
    ├── forward (batch size, worker)      engine: a batch sent to a worker, until answered
    │   └── batch                         worker: the forward, linked to every request's
    │                                     forward span in the batch (a child of the first)
    └── postprocess                       front end

Between processes a span travels as a W3C traceparent string in the messages of `schema.py`:
a request's in `Submit`, its forward spans' in `ForwardBatch.links`.

Each process turns tracing on with `start` and flushes with `stop`; spans go where the standard
OTEL_* variables say (OTEL_TRACES_EXPORTER: otlp by default, console, none; OTEL_SERVICE_NAME,
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER...). Off by default, and then free: `active` is
None, each site checks that once and makes no span, and opentelemetry is never imported, so the
server runs without it installed.
"""

import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from pipeserve.server.errors import StartupError
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    BatchSkipped,
    ForwardBatch,
    WorkerSpec,
)

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

_INSTALL = "pip install 'pipeserve[tracing]'"
# What a site enters while tracing is off: one shared object, no span.
_OFF: AbstractContextManager[None] = nullcontext()


class Tracing:
    """This process's tracer, while tracing is on."""

    def __init__(self, provider: "TracerProvider") -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("pipeserve")
        # W3C between the server's own processes, whatever OTEL_PROPAGATORS says for callers.
        self._w3c = TraceContextTextMapPropagator()

    def traceparent(self, span: "Span | None" = None) -> str | None:
        """`span`'s W3C traceparent (the current span's by default), for another process."""
        from opentelemetry import trace

        carrier: dict[str, str] = {}
        self._w3c.inject(carrier, None if span is None else trace.set_span_in_context(span))
        return carrier.get("traceparent")

    def context(self, traceparent: str) -> "Context":
        return self._w3c.extract({"traceparent": traceparent})

    def queued(self, traceparent: str, items: int, done: "asyncio.Future") -> "RequestSpans":
        return RequestSpans(self, self.context(traceparent), items, done)

    def dispatched(
        self,
        traces: Sequence["RequestSpans | None"],
        batch_id: int,
        padded_tokens: int,
        worker: WorkerSpec,
    ) -> "BatchSpans | None":
        """Batch `batch_id`, whose items' requests have `traces`, was sent to `worker`: the
        items leave the queue, and each traced request gets its forward span."""
        attributes = {
            **_batch_attributes(batch_id, len(traces), padded_tokens),
            **worker_attributes(worker),
        }
        spans = []
        for trace, items in Counter(t for t in traces if t is not None).items():
            trace.sent(items)
            spans.append(trace.forward(attributes))
        return BatchSpans(self, spans) if spans else None

    def batch(self, message: ForwardBatch) -> AbstractContextManager["Span"]:
        """A worker's span of one batch: a child of its first request's forward span, linked
        to every one's. Which worker ran it is its resource's say (`worker_attributes`)."""
        from opentelemetry.trace import Link, get_current_span

        contexts = [self.context(link) for link in message.links]
        size = len(message.lengths)
        return self.tracer.start_as_current_span(
            "batch",
            context=contexts[0],
            links=[Link(get_current_span(c).get_span_context()) for c in contexts],
            attributes=_batch_attributes(message.batch_id, size, size * message.width),
        )


class RequestSpans:
    """A request's spans in the engine: its queue wait, open until its last item is sent to a
    worker (or the request ends first), and a forward span per batch that runs its items."""

    def __init__(
        self, tracing: Tracing, parent: "Context", items: int, done: "asyncio.Future"
    ) -> None:
        self._tracer = tracing.tracer
        self._parent = parent
        self._unsent = items
        self._queue: Span | None = self._tracer.start_span("queue", context=parent)
        done.add_done_callback(lambda _: self._end_queue())

    def sent(self, items: int) -> None:
        self._unsent -= items
        if self._unsent <= 0:
            self._end_queue()

    def _end_queue(self) -> None:
        if self._queue is not None:
            self._queue.end()
            self._queue = None

    def forward(self, attributes: dict[str, Any]) -> "Span":
        return self._tracer.start_span("forward", context=self._parent, attributes=attributes)


class BatchSpans:
    """The forward spans of the requests in one batch, ended with the batch."""

    def __init__(self, tracing: Tracing, spans: list["Span"]) -> None:
        self._spans = spans
        # What the worker's batch span links to.
        self.links = tuple(filter(None, map(tracing.traceparent, spans)))

    def ended(self, outcome: BatchDone | BatchFailed | BatchSkipped) -> None:
        match outcome:
            case BatchFailed(reason=reason):
                self._end(f"the model failed on the batch: {reason}")
            case BatchSkipped():
                self._end("not computed: every caller left or its deadline passed")
            case BatchDone():
                self._end(None)

    def lost(self) -> None:
        """Its worker died before answering."""
        self._end("the worker died")

    def _end(self, error: str | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        for span in self._spans:
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()


# This process's tracing: None while off (the default).
active: Tracing | None = None


def start(
    process: str,
    attributes: dict[str, Any] | None = None,
    processor: "SpanProcessor | None" = None,
) -> None:
    """Turns tracing on in this process (`process`: main, frontend or worker; `attributes`:
    more of what it is), exporting as the OTEL_* variables say, or to `processor` when given."""
    global active
    try:
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise StartupError(f"--tracing needs OpenTelemetry: {_INSTALL}") from error
    ours = Resource.create(
        {
            "service.name": "pipeserve",
            "pipeserve.process": process,
            "process.pid": os.getpid(),
            **(attributes or {}),
        }
    )
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the defaults above.
    provider = TracerProvider(resource=ours.merge(OTELResourceDetector().detect()))
    processors = [processor] if processor else [BatchSpanProcessor(e) for e in _exporters()]
    for each in processors:
        provider.add_span_processor(each)
    active = Tracing(provider)


def stop() -> None:
    """Exports what is left and turns tracing off in this process."""
    global active
    if active is not None:
        active.provider.shutdown()
        active = None


def _exporters() -> list[Any]:
    """The span exporters OTEL_TRACES_EXPORTER names (comma-separated; otlp when unset), found
    by the entry points that OpenTelemetry's packages register, as the SDK finds them: otlp
    over the protocol OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL names."""
    from importlib.metadata import entry_points

    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    exporters = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name == "none":
            continue
        if name == "otlp":
            name = _otlp_exporter()
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise StartupError(
                f"OTEL_TRACES_EXPORTER={name}: no such span exporter installed (console, otlp, "
                f"otlp_proto_http with {_INSTALL})"
            )
        exporters.append(next(iter(found)).load()())
    return exporters


def _otlp_exporter() -> str:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    exporters = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
    if protocol not in exporters:
        raise StartupError(f"OTLP protocol {protocol!r}: give grpc or http/protobuf")
    return exporters[protocol]


# What the sites call; each returns at once while tracing is off.


def span(name: str) -> AbstractContextManager[Any]:
    """A child span of the current one around a `with` block (an exception in it marks it)."""
    return _OFF if active is None else active.tracer.start_as_current_span(name)


def record(name: str, began: float) -> None:
    """A child span of the current one for work that began at time.perf_counter() `began`
    and has just ended."""
    if active is not None:
        now = time.time_ns()
        start_ns = now - int((time.perf_counter() - began) * 1e9)
        active.tracer.start_span(name, start_time=start_ns).end(end_time=now)


def traceparent() -> str | None:
    """The current span's traceparent, for the engine; None while off."""
    return None if active is None else active.traceparent()


def queued(traceparent: str | None, items: int, done: "asyncio.Future") -> RequestSpans | None:
    """The engine's spans of a request of `items` queued for a caller whose span is
    `traceparent`, ended by then if not before as `done` completes."""
    if active is None or traceparent is None:
        return None
    return active.queued(traceparent, items, done)


def batch(message: ForwardBatch) -> AbstractContextManager[Any]:
    """A worker's span around the forward of `message`, if any of its requests is traced."""
    if active is None or not message.links:
        return _OFF
    return active.batch(message)


def worker_attributes(worker: WorkerSpec) -> dict[str, Any]:
    """Which worker: on the engine's forward spans, and the resource of the worker's own."""
    return {"pipeserve.worker.id": worker.worker_id, "pipeserve.worker.device": worker.device.label}


def _batch_attributes(batch_id: int, size: int, padded_tokens: int) -> dict[str, Any]:
    return {
        "pipeserve.batch.id": batch_id,
        "pipeserve.batch.size": size,
        "pipeserve.batch.padded_tokens": padded_tokens,
    }
