"""The engine of one model: one owner of its queue, batcher, batches in flight and workers.

The queue changes here alone: calls are admitted, queued and withdrawn through the engine's
calls below, the batcher takes its batches from it, and the dispatcher reports what became of
the batches in flight (`dispatch.Outcome`), which `_settle` applies, in order.

The request path (`requests/infer.py`) and the gRPC edge talk to it through the few calls of
`EngineCalls`, and nothing else. The model registry (`registry.py`) starts and stops engines.

How a request crosses the processes: `submit` queues its sequences and returns a `Request`
whose future the caller awaits; the batcher puts them in batches, and each batch goes over a
pipe to a worker process (ids in shared memory, `workers/`); the dispatcher hands each item's
rows back to its request, which gathers them into one `Outputs` when the last arrives and
completes the future. With several front ends (`--frontends`) the engines run in the main
process: a front end's `RemoteEngine` (`frontends/remote.py`) sends the sequences over its pipe
to the `Hub` (`frontends/hub.py`), which submits them here and sends the `Outputs` back as
they are, large arrays in shared memory, to complete the front end's own future.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from pipeserve.server import tracing
from pipeserve.server.engine.batcher import Batcher
from pipeserve.server.engine.cost import BatchCost
from pipeserve.server.engine.dispatch import (
    PIPELINE_DEPTH,
    Dispatcher,
    FailQueued,
    Halves,
    Held,
    Outcome,
    Ran,
    Retry,
    Room,
    WorkerStats,
)
from pipeserve.server.engine.queue import Admission, Entry, Permit, Queue, Request
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import Output, WorkerReady, WorkerSpec, WorkerStatus
from pipeserve.server.settings import Settings
from pipeserve.server.workers.supervisor import (
    Supervisor,
    WorkerHandle,
    WorkerStarter,
    start_worker_process,
)

log = logging.getLogger("pipeserve.engine")


class EngineCalls(Protocol):
    """What the request path and the edge ask of the engine, here or in another process."""

    @property
    def alive(self) -> int: ...

    @property
    def model(self) -> WorkerReady: ...

    @property
    def waiting(self) -> int: ...

    def admit(self, items: int) -> Admission: ...

    def submit(
        self,
        sequences: Sequence[Encoded],
        outputs: tuple[Output, ...],
        deadline: float | None,
        permit: Admission,
        traceparent: str | None = None,
    ) -> Request: ...

    def withdraw(self, request: Request) -> None:
        """The request's caller has gone (its future is cancelled): none of its items that
        have not started are computed."""

    async def worker_status(self) -> list[WorkerStatus]: ...


class Engine:
    def __init__(
        self,
        settings: Settings,
        card: ModelCard,
        specs: list[WorkerSpec],
        metrics: Metrics,
        on_alive_change: Callable[[int], None],
        start_worker: WorkerStarter = start_worker_process,
    ) -> None:
        self._settings = settings
        self.queue = Queue(settings.max_queued_items)
        self._cost = BatchCost()
        self._last_batch = (0, 0.0)
        self.dispatcher = Dispatcher(
            metrics.for_model(settings.model_name),
            report=self._settle,
            pad_token_id=card.tokenizer.pad_token_id,
            send_token_type_ids=card.tokenizer.uses_token_type_ids,
            forward_timeout_s=settings.forward_timeout_s,
        )
        self.workers = Supervisor(
            specs,
            self.dispatcher,
            depth=PIPELINE_DEPTH,
            # A batch's padded ids stay within the token budget, or are one item alone.
            slot_capacity=max(settings.max_batch_tokens, card.max_length),
            on_alive_change=on_alive_change,
            start_worker=start_worker,
        )
        self._batcher = Batcher(
            self.queue,
            self.dispatcher,
            self,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
        )
        self._batcher_task: asyncio.Task | None = None
        # Requests queued or computing, until their futures are done: what an unload waits for.
        self._requests: set[Request] = set()
        metrics.watch(settings.model_name, self.queue, self.workers, self.dispatcher)

    async def start(self, on_batcher_failed: Callable[[], None]) -> None:
        """Starts the batcher, then the workers; returns when every worker is ready."""
        self._batcher_task = asyncio.create_task(self._batcher.run(), name="batcher")

        def on_end(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                # Without a batcher every call would hang: fail loudly and shut down instead.
                log.error("batcher stopped", exc_info=task.exception())
                on_batcher_failed()

        self._batcher_task.add_done_callback(on_end)
        await self.workers.start()

    @property
    def idle(self) -> bool:
        """No call is being tokenized, queued or computed here."""
        return not self._requests and self.queue.reserved == 0

    async def drain(self, grace_s: float) -> int:
        """Waits up to `grace_s` for the calls here to be answered (no new ones may come);
        returns how many were not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while not self.idle and (left := deadline - loop.time()) > 0:
            if self._requests:
                futures = [r.future for r in self._requests]
                await asyncio.wait(futures, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            else:  # only calls being tokenized, which queue within moments
                await asyncio.sleep(min(left, 0.01))
        return len(self._requests)

    def cut(self, error: Exception) -> None:
        """Fails every call still here with `error`, queued or computing (an unload whose
        grace has run out), rather than with what stopping the workers would say."""
        for request in list(self._requests):
            request.fail(error)
        self.queue.fail_all(error)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the batcher, and the workers within `timeout_s` (then they are killed)."""
        if self._batcher_task is not None:
            self._batcher_task.cancel()
        await self.workers.stop(timeout_s)

    # What the batches run so far say, for the batcher.

    @property
    def cost(self) -> BatchCost:
        return self._cost

    @property
    def last_batch(self) -> tuple[int, float]:
        """(items, forward ms) of the batch that finished last."""
        return self._last_batch

    def _settle(self, outcome: Outcome) -> None:
        """Applies what the dispatcher reports of its batches, as it reports it: no backlog,
        so the batcher it wakes and the next admission see the queue changed already."""
        queue = self.queue
        match outcome:
            case Ran(items, padded_tokens, forward_ms, calls):
                self._cost.observe(padded_tokens, forward_ms, calls)
                self._last_batch = (items, forward_ms)
            case Held(items):
                queue.hold(items)
            case Room():
                queue.poke()
            case Retry(entries):
                queue.requeue(entries)
            case Halves(batches):
                queue.requeue_formed(batches)
            case FailQueued(error):
                queue.fail_all(error)

    # What the request path asks.

    @property
    def alive(self) -> int:
        return self.workers.alive

    @property
    def model(self) -> WorkerReady:
        return self.workers.model

    @property
    def waiting(self) -> int:
        return self.queue.waiting

    def admit(self, items: int) -> Permit:
        return self.queue.admit(items, asyncio.get_running_loop().time())

    def submit(
        self,
        sequences: Sequence[Encoded],
        outputs: tuple[Output, ...],
        deadline: float | None,
        permit: Admission,
        traceparent: str | None = None,
    ) -> Request:
        """Queues a request's sequences; its future gets their `Outputs`. With --tracing,
        `traceparent` is the call's span, the parent of its spans here."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        lengths = tuple(len(s) for s in sequences)
        request = Request(loop.create_future(), outputs, lengths, self.model.token_level)
        request.trace = tracing.queued(traceparent, len(lengths), request.future)
        entries = [
            Entry(request, i, s.input_ids, s.token_type_ids, now, deadline)
            for i, s in enumerate(sequences)
        ]
        self.queue.put(entries, permit)
        self._requests.add(request)
        request.future.add_done_callback(lambda _: self._requests.discard(request))
        return request

    def withdraw(self, request: Request) -> None:
        # At once rather than when the batcher next looks, so the queue's count is true.
        self.queue.drop_gone(asyncio.get_running_loop().time())
        self.dispatcher.withdraw(request)

    async def worker_status(self) -> list[WorkerStatus]:
        dispatcher = self.dispatcher
        return [
            _status(w, dispatcher.stats.get(w.worker_id, WorkerStats()), self.workers, dispatcher)
            for w in self.workers.workers
        ]


def _status(
    worker: WorkerHandle, stats: WorkerStats, workers: Supervisor, dispatcher: Dispatcher
) -> WorkerStatus:
    return WorkerStatus(
        worker_id=worker.worker_id,
        device=worker.spec.device.label,
        pid=worker.pid if worker.process.is_alive() else 0,
        ready=worker.ready is not None,
        batches=stats.batches,
        items=stats.items,
        restarts=workers.restarts[worker.worker_id],
        busy=dispatcher.held(worker.worker_id) > 0,
    )
