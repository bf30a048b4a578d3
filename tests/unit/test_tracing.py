"""OpenTelemetry traces (--tracing): one call's spans form one tree under the caller's span,
across a front end, the engine and a worker.

In process, with the SDK's in-memory exporter: the engine, driven as the batcher drives it,
and the real worker loop (in a thread, on the tiny model) answering over a real pipe, so the
trace context crosses the same messages as between processes. Then a real server with two
front ends and the console exporter: the spans of every process, parsed from its output.
"""

import asyncio
import multiprocessing
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipeserve.server import tracing
from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.dispatch import PIPELINE_DEPTH
from pipeserve.server.errors import StartupError, Unavailable
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import DeviceSpec, ForwardBatch, Stop, WorkerReady, WorkerSpec
from pipeserve.server.settings import DType, Quantize, Settings, Task
from pipeserve.server.workers.shm import InputSlots
from pipeserve.server.workers.supervisor import WorkerHandle
from tests.conftest import caller_spans, traceparent

_CAPACITY = 256  # ids per input slot: more than any batch here


class _InProcessWorker:
    """Worker 0 of an engine in this process: the real worker's loading and loop, in a
    thread, over a pipe."""

    def __init__(self, model: Path) -> None:
        import torch

        # As many cores as this process's torch threads: loading leaves them as they are.
        cores = tuple(range(torch.get_num_threads()))
        self.spec = WorkerSpec(0, str(model), None, Task.TEXT_CLASSIFICATION, DType.FLOAT32,
                               Quantize.NONE, DeviceSpec(cpus=cores))  # fmt: skip
        self.slots = InputSlots.create(PIPELINE_DEPTH, _CAPACITY)
        here, self._there = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process()  # never started
        self.handle = WorkerHandle(self.spec, process, here, self.slots)
        self.sent: list[ForwardBatch] = []

    async def start(self, engine: Engine) -> None:
        """Starts the worker; returns once `engine` has its WorkerReady. Every message it
        sends goes to `engine` as the supervisor hands them over."""
        from pipeserve.server.workers.worker import _load_and_serve

        conn, handle = self.handle.conn, self.handle
        asyncio.get_running_loop().add_reader(
            conn.fileno(), lambda: engine.workers._on_message(handle, conn.recv())
        )
        there = _Recording(self._there, self.sent)
        args = (self.spec, there, self.slots, "cpu")
        self._thread = threading.Thread(target=_load_and_serve, args=args, daemon=True)
        self._thread.start()
        await engine.dispatcher.wait_for_room()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.handle.conn.fileno())
        self.handle.conn.send(Stop())
        self._thread.join(60)
        self.slots.close(unlink=True)


class _Recording:
    """The worker's end of its pipe, keeping each batch message it receives."""

    def __init__(self, conn, received: list) -> None:
        self._conn = conn
        self._received = received

    def recv(self):
        message = self._conn.recv()
        self._received.append(message)
        return message

    def send(self, message) -> None:
        self._conn.send(message)


def _engine() -> Engine:
    settings = Settings(forward_timeout_s=600)
    card = SimpleNamespace(
        tokenizer=SimpleNamespace(pad_token_id=0, uses_token_type_ids=False), max_length=64
    )
    return Engine(settings, card, [], Metrics(), lambda alive: None)  # type: ignore[arg-type]


def _submit(engine: Engine, lengths: tuple[int, ...], caller: trace.Span):
    """Queues a request of sequences of `lengths` for `caller`, as a front end does."""
    sequences = [Encoded(np.arange(1000, 1000 + n), None) for n in lengths]
    permit = engine.admit(len(sequences))
    return engine.submit(sequences, ("logits",), None, permit, traceparent(caller))


def _send(engine: Engine, worker: _InProcessWorker, max_size: int = 32) -> None:
    """Cuts the next batch, of up to `max_size` items, and sends it to the worker, as the
    batcher does."""
    # A batch's fixed cost far above its padding: the batch takes every item it may.
    overhead_tokens = 1e6
    now = asyncio.get_running_loop().time()
    batch = engine.queue.take(_CAPACITY, max_size, overhead_tokens, now)
    engine.dispatcher.dispatch(worker.handle, batch)


def _run_engine(model: Path, scenario) -> WorkerSpec:
    """Runs `scenario(engine, worker)` on an engine with one in-process worker of `model`;
    returns the worker's spec."""
    worker = _InProcessWorker(model)

    async def run() -> None:
        engine = _engine()
        try:
            await worker.start(engine)
            await scenario(engine, worker)
        finally:
            worker.close()

    asyncio.run(run())
    return worker.spec


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


def test_one_batch_span_in_the_worker_links_every_request_it_served(tiny_distilbert, exported):
    first, second = caller_spans(2)

    async def scenario(engine: Engine, worker: _InProcessWorker) -> None:
        requests = [_submit(engine, (5, 7), first), _submit(engine, (6,), second)]
        _send(engine, worker)
        for request in requests:
            assert (await request.future)["logits"].shape[1] == 2

    worker = _run_engine(tiny_distilbert, scenario)
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

    async def scenario(engine: Engine, worker: _InProcessWorker) -> None:
        request = _submit(engine, (4, 9), caller)
        _send(engine, worker, max_size=1)
        assert not _named(exported.get_finished_spans(), "queue")  # one item still queued
        _send(engine, worker, max_size=1)
        assert len(_named(exported.get_finished_spans(), "queue")) == 1
        await request.future

    _run_engine(tiny_distilbert, scenario)
    spans = exported.get_finished_spans()
    forwards = _named(spans, "forward")
    assert [f.attributes["pipeserve.batch.size"] for f in forwards] == [1, 1]
    assert all(_child_of(f, caller.get_span_context()) for f in forwards)
    assert len(_named(spans, "batch")) == 2


def test_a_batch_whose_worker_died_ends_its_forward_spans_failed(exported):
    (caller,) = caller_spans(1)

    async def scenario() -> None:
        engine = _engine()
        slots = InputSlots.create(PIPELINE_DEPTH, _CAPACITY)
        here, there = multiprocessing.Pipe()
        spec = WorkerSpec(0, "tiny", None, Task.TEXT_CLASSIFICATION, DType.FLOAT32,
                          Quantize.NONE, DeviceSpec(cpus=(0,)))  # fmt: skip
        ready = WorkerReady(0, 0, "cpu:0", "Tiny", ("logits",), ("logits",))
        handle = WorkerHandle(spec, multiprocessing.Process(), here, slots, ready=ready)
        try:
            engine.workers._on_message(handle, ready)
            request = _submit(engine, (3,), caller)
            batch = engine.queue.take(_CAPACITY, 32, 0.0, asyncio.get_running_loop().time())
            engine.dispatcher.dispatch(handle, batch)
            assert there.recv().links  # the worker is told whom the batch serves
            engine.dispatcher.on_exit(handle, alive=0)
            assert isinstance(request.future.exception(), Unavailable)
        finally:
            slots.close(unlink=True)

    asyncio.run(scenario())
    (forward,) = _named(exported.get_finished_spans(), "forward")
    assert forward.status.status_code is StatusCode.ERROR
    assert forward.status.description == "the worker died"


def test_with_tracing_off_the_engine_keeps_no_spans_and_sends_no_trace_context(tiny_distilbert):
    assert tracing.active is None

    async def scenario(engine: Engine, worker: _InProcessWorker) -> None:
        # A traceparent reaching an engine that does not trace is ignored.
        request = _submit(engine, (5,), caller_spans(1)[0])
        assert request.trace is None
        _send(engine, worker)
        await request.future
        (sent,) = worker.sent
        assert sent.links == ()

    _run_engine(tiny_distilbert, scenario)


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
