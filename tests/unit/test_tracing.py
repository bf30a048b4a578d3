"""OpenTelemetry traces (--tracing) in the engine, in process with the SDK's in-memory exporter:
the engine and the real worker loop on the tiny model (tests/unit/engine_harness.py), answering
over a real pipe, so the trace context crosses the same messages as between processes; a batch
whose worker died ends its spans failed; with tracing off nothing is kept or sent; the exporter
and service name follow the OTEL_* variables. Through a real server:
tests/e2e/test_tracing.py.
"""

import asyncio
import os

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipeserve.server import tracing
from pipeserve.server.engine.core import Engine
from pipeserve.server.errors import StartupError, Unavailable
from pipeserve.server.schema import WorkerSpec
from tests.helpers import caller_spans, traceparent
from tests.unit.engine_harness import engine_of
from tests.unit.engine_standins import _BIG, _run, _submit, _Worker


@pytest.fixture
def exported():
    """Tracing on in this process, its spans kept in memory."""
    exporter = InMemorySpanExporter()
    tracing.start("main", processor=SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.stop()


def _named(spans, name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _child_of(span: ReadableSpan, parent: trace.SpanContext) -> bool:
    return (
        span.parent is not None
        and span.parent.span_id == parent.span_id
        and span.context.trace_id == parent.trace_id
    )


# Tokens with [CLS] and [SEP]: 5, 7 and 6, padding short of a call's cost, so the engine sends
# the three in one call of the longest length.
_SHORT, _LONG, _MIDDLE = "one two three", "one two three four five", "one two three four"


def test_one_batch_span_in_the_worker_links_every_request_it_served(tiny_distilbert, exported):
    first, second = caller_spans(2)

    async def scenario() -> WorkerSpec:
        # A batch held open until it holds both requests' three items.
        async with engine_of(tiny_distilbert, max_wait_ms=60000, max_batch_size=3) as harness:
            requests = [
                harness.submit([_SHORT, _LONG], traceparent=traceparent(first)),
                harness.submit([_MIDDLE], traceparent=traceparent(second)),
            ]
            for request in requests:
                assert (await request.future)["logits"].shape[1] == 2
            return harness.workers.started[0].spec

    worker = asyncio.run(scenario())
    spans = exported.get_finished_spans()
    for caller in (first, second):
        (queue,) = [s for s in _named(spans, "queue") if _child_of(s, caller.get_span_context())]
        assert queue.end_time is not None
    forwards = _named(spans, "forward")
    assert len(forwards) == 2
    for forward, caller in zip(forwards, (first, second), strict=True):
        assert _child_of(forward, caller.get_span_context())
        assert forward.attributes["pipeserve.batch.size"] == 3
        assert forward.attributes["pipeserve.worker.id"] == 0
        assert forward.attributes["pipeserve.worker.device"] == worker.device.label
        assert forward.status.status_code is StatusCode.UNSET
    (batch,) = _named(spans, "batch")
    # In the first request's tree, linked to both: each caller's trace leads to it.
    assert _child_of(batch, forwards[0].context)
    assert [link.context.span_id for link in batch.links] == [f.context.span_id for f in forwards]
    assert batch.attributes["pipeserve.batch.size"] == 3
    assert batch.attributes["pipeserve.batch.padded_tokens"] == 3 * 7
    assert forwards[0].start_time <= batch.start_time <= batch.end_time <= forwards[0].end_time
    assert batch.resource.attributes["service.name"] == "pipeserve"


def test_the_queue_span_lasts_until_the_requests_last_item_is_sent(tiny_distilbert, exported):
    (caller,) = caller_spans(1)

    async def scenario() -> None:
        async with engine_of(tiny_distilbert, max_batch_size=1) as harness:
            await harness.submit([_SHORT, _LONG], traceparent=traceparent(caller)).future

    asyncio.run(scenario())
    spans = exported.get_finished_spans()
    forwards = _named(spans, "forward")
    assert [f.attributes["pipeserve.batch.size"] for f in forwards] == [1, 1]
    assert all(_child_of(f, caller.get_span_context()) for f in forwards)
    assert len(_named(spans, "batch")) == 2
    # Open while the second item waits, ended as it is sent, before its forward starts.
    (queue,) = _named(spans, "queue")
    assert forwards[0].start_time < queue.end_time <= forwards[1].start_time


def test_a_batch_whose_worker_died_ends_its_forward_spans_failed(exported):
    (caller,) = caller_spans(1)

    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        request = _submit(engine, 3, traceparent=traceparent(caller))
        batch = engine.queue.take(_BIG, _BIG, 0.0, asyncio.get_running_loop().time())
        engine.dispatcher.dispatch(worker.handle, batch)
        assert worker.received().links  # the worker is told whom the batch serves
        engine.dispatcher.on_exit(worker.handle, alive=0)
        assert isinstance(request.future.exception(), Unavailable)

    _run(scenario)
    (forward,) = _named(exported.get_finished_spans(), "forward")
    assert forward.status.status_code is StatusCode.ERROR
    assert forward.status.description == "the worker died"


def test_with_tracing_off_the_engine_keeps_no_spans_and_sends_no_trace_context(tiny_distilbert):
    assert tracing.active is None

    async def scenario() -> None:
        async with engine_of(tiny_distilbert) as harness:
            # A traceparent reaching an engine that does not trace is ignored.
            request = harness.submit([_SHORT], traceparent=traceparent(caller_spans(1)[0]))
            assert request.trace is None
            await request.future
            (sent,) = harness.workers.started[0].received
            assert sent.links == ()

    asyncio.run(scenario())


def test_the_exporter_and_service_name_follow_the_otel_variables(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-nonesuch")
    with pytest.raises(StartupError, match="OTEL_TRACES_EXPORTER=zipkin-nonesuch"):
        tracing.start("main")
    assert tracing.active is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    exporters = [type(e).__module__ for e in tracing._exporters()]
    assert exporters == [
        "opentelemetry.sdk.trace.export",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sentiment")
    tracing.start("main")
    try:
        assert tracing.active is not None
        resource = tracing.active.provider.resource
        assert resource.attributes["service.name"] == "sentiment"
        assert resource.attributes["process.pid"] == os.getpid()
    finally:
        tracing.stop()
