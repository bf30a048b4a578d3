"""The engine as the queue's one owner, in process: the dispatcher reports what became of each
batch (retry, halves, held, room, fail all) and the engine alone changes the queue. Workers are
stand-ins with real input slots and pipes, answered by the test, so every step is exact: a dead
worker's batch retried once, a failing batch bisected, a waiting batch withdrawn when its
callers leave, and what is held in an inbox counted as waiting."""

import asyncio

import numpy as np
import pytest

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.dispatch import (
    Dispatcher,
    FailQueued,
    Held,
    Ran,
    Retry,
    Room,
)
from pipeserve.server.engine.queue import Entry, Queue, Request
from pipeserve.server.errors import ModelFailed, Overloaded, Unavailable
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.pooling import pool
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    BatchSkipped,
    ForwardBatch,
    MaskRows,
    Pooled,
)
from pipeserve.server.workers.derived import forward_derived
from tests.unit.engine_standins import _BIG, _run, _submit, _Worker


def _take(engine: Engine) -> list[Entry]:
    return engine.queue.take(_BIG, _BIG, 0.0, asyncio.get_running_loop().time())


def _done(batch: ForwardBatch, forward_ms: float = 5.0) -> BatchDone:
    rows = len(batch.lengths)
    outputs = {o: np.full((rows, 2), batch.batch_id, np.float32) for o in batch.outputs}
    return BatchDone(batch.batch_id, outputs, forward_ms)


def test_a_batch_behind_a_running_one_waits_until_it_starts_and_the_engine_learns():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        first = _submit(engine, 3)
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        running = worker.received()
        assert engine.waiting == 0  # started on the worker
        second = _submit(engine, 4, 4)
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        behind = worker.received()
        assert behind.lengths == (4, 4)
        assert engine.waiting == 2  # in the worker's inbox, not started
        engine.dispatcher.on_batch(worker.handle, _done(running, forward_ms=7.0))
        assert engine.waiting == 0
        assert engine.last_batch == (1, 7.0)
        assert engine.cost.predict_ms(100) == 7.0  # the mean batch's, until the fit has data
        assert first.future.result().item(0)["logits"][0] == running.batch_id
        assert not second.future.done()
        engine.dispatcher.on_batch(worker.handle, _done(behind))
        assert list(second.future.result()["logits"][:, 0]) == [behind.batch_id] * 2
        assert engine.last_batch == (2, 5.0)

    _run(scenario)


def test_a_dead_workers_batch_is_retried_once_first_then_fails_unavailable():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        a, b = workers
        dying = _submit(engine, 3, 3)
        engine.dispatcher.dispatch(a.handle, _take(engine))
        later = _submit(engine, 4)
        engine.dispatcher.on_exit(a.handle, alive=1)
        # Back at the front of the queue, ahead of what came after it.
        assert engine.waiting == 3
        retried = engine.queue.take(_BIG, 2, 0.0, asyncio.get_running_loop().time())
        assert [e.request for e in retried] == [dying, dying]
        assert [e.attempts for e in retried] == [1, 1]
        engine.dispatcher.dispatch(b.handle, retried)
        engine.dispatcher.on_exit(b.handle, alive=1)
        error = dying.future.exception()
        assert isinstance(error, Unavailable)
        assert "after a retry" in str(error)
        assert [e.request for e in _take(engine)] == [later]

    _run(scenario, workers=2)


def test_a_failing_batch_runs_in_halves_until_the_bad_item_fails_alone():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        requests = [_submit(engine, 3) for _ in range(4)]
        entries = _take(engine)

        def run(batch: list[Entry], fails: bool) -> None:
            engine.dispatcher.dispatch(worker.handle, batch)
            sent = worker.received()
            reply = BatchFailed(sent.batch_id, "IndexError") if fails else _done(sent)
            engine.dispatcher.on_batch(worker.handle, reply)

        run(entries, fails=True)
        late = _submit(engine, 3)
        # Each half runs as it was formed, before anything queued after it.
        assert _take(engine) == entries[:2]
        run(entries[:2], fails=True)
        assert _take(engine) == entries[:1]
        run(entries[:1], fails=False)
        assert _take(engine) == entries[1:2]
        run(entries[1:2], fails=True)
        assert isinstance(requests[1].future.exception(), ModelFailed)
        assert requests[0].future.result().item(0)["logits"].shape == (2,)
        assert not any(r.future.done() for r in requests[2:])
        assert _take(engine) == entries[2:]
        assert [e.request for e in _take(engine)] == [late]

    _run(scenario)


def test_a_waiting_batch_whose_callers_left_is_withdrawn_and_stops_counting():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        _submit(engine, 3)
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        running = worker.received()
        leaving = _submit(engine, 4, 4)
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        behind = worker.received()
        assert engine.waiting == 2
        leaving.future.cancel()
        engine.withdraw(leaving)
        assert worker.slots.withdrawn(behind.slot)
        assert engine.waiting == 0
        # Its items stopped counting once, not again when the batch ahead of it ends.
        engine.dispatcher.on_batch(worker.handle, _done(running))
        assert engine.waiting == 0
        engine.dispatcher.on_batch(worker.handle, BatchSkipped(behind.batch_id))
        assert engine.waiting == 0

    _run(scenario)


def test_no_live_worker_fails_every_queued_call_at_once():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        running = _submit(engine, 3)
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        queued = _submit(engine, 4)
        engine.dispatcher.on_exit(worker.handle, alive=0)
        for request in (running, queued):
            assert isinstance(request.future.exception(), Unavailable)
        assert engine.waiting == 0 and _take(engine) == []

    _run(scenario)


def test_the_dispatcher_reports_each_outcome_as_it_happens():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reports: list = []
        dispatcher = Dispatcher(
            Metrics().for_model("tiny"),
            report=reports.append,
            pad_token_id=0,
            send_token_type_ids=False,
            forward_timeout_s=600,
        )
        worker = _Worker(0)
        try:
            request = Request(loop.create_future(), ("logits",), (3, 3))
            entries = [Entry(request, i, np.arange(1, 4), None, loop.time()) for i in range(2)]
            dispatcher.dispatch(worker.handle, entries)  # not ready yet: never left
            assert reports == [Retry(entries)]
            reports.clear()
            dispatcher.on_ready(worker.handle)
            dispatcher.dispatch(worker.handle, entries[:1])
            dispatcher.dispatch(worker.handle, entries[1:])
            first, second = worker.received(), worker.received()
            dispatcher.on_batch(worker.handle, _done(first, forward_ms=4.0))
            assert reports == [Room(), Held(1), Held(-1), Room(), Ran(1, 3, 4.0)]
            reports.clear()
            dispatcher.on_exit(worker.handle, alive=0)
            # The batch that waited had started: one attempt spent, so it is retried.
            (retry, fail) = reports
            assert second.lengths == (3,)
            assert retry == Retry(entries[1:])
            assert isinstance(fail, FailQueued) and isinstance(fail.error, Unavailable)
        finally:
            worker.close()

    asyncio.run(scenario())


def test_a_permit_releases_its_places_through_the_queue_once():
    queue = Queue(max_items=4)
    permit = queue.admit(3, now=0.0)
    assert queue.reserved == 3
    with pytest.raises(Overloaded):
        queue.admit(2, now=0.0)
    permit.release()
    permit.release()
    assert queue.reserved == 0
    queue.admit(4, now=0.0)


def test_a_batch_asks_once_for_each_typed_output_and_each_request_gets_its_own():
    async def scenario(engine: Engine, workers: list[_Worker]) -> None:
        (worker,) = workers
        mean, cls, masks = Pooled("mean", 0), Pooled("cls", 2), MaskRows(103)
        asks = [(mean,), (mean, "logits"), (cls,), (masks, mean)]
        requests = [_submit(engine, 3, outputs=outputs) for outputs in asks]
        engine.dispatcher.dispatch(worker.handle, _take(engine))
        sent = worker.received()
        assert sent.outputs == (mean, "logits", cls, masks)
        arrays = {
            o: np.arange(8, dtype=np.float32).reshape(4, 2) * (i + 1)
            for i, o in enumerate(sent.outputs)
        }
        engine.dispatcher.on_batch(worker.handle, BatchDone(sent.batch_id, arrays, 1.0))
        for row, (request, outputs) in enumerate(zip(requests, asks, strict=True)):
            result = request.future.result().item(0)
            assert list(result) == list(outputs)
            for output in outputs:
                np.testing.assert_array_equal(result[output], arrays[output][row])

    _run(scenario)


class _Runner:
    """A backend's outputs, fixed: what forward_derived asks of it is recorded."""

    def __init__(self, hidden: np.ndarray, logits: np.ndarray) -> None:
        self.result = {"last_hidden_state": hidden, "logits": logits}
        self.asked: list[list[str]] = []

    def forward(self, input_ids, attention_mask, token_type_ids, outputs):
        self.asked.append(list(outputs))
        return {name: self.result[name] for name in outputs}


def test_the_worker_derives_typed_outputs_from_the_backends_own():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, 5, 4)).astype(np.float32)
    logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
    ids = np.array([[1, 9, 2, 9, 3], [1, 2, 9, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    runner = _Runner(hidden, logits)
    mean, cls = Pooled("mean", 1), Pooled("cls", 0)
    derived = forward_derived(runner, ids, mask, None, (mean, MaskRows(9), cls))
    assert runner.asked == [["last_hidden_state", "logits"]]
    np.testing.assert_array_equal(derived[mean], pool(hidden, mask, "mean", 1))
    np.testing.assert_array_equal(derived[cls], hidden[:, 0])
    np.testing.assert_array_equal(derived[MaskRows(9)][0], logits[0, [1, 3]])
    np.testing.assert_array_equal(derived[MaskRows(9)][1], [logits[1, 2], np.zeros(7)])
    assert list(forward_derived(runner, ids, mask, None, ("logits",))) == ["logits"]
    assert runner.asked[-1] == ["logits"]
