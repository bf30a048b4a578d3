"""The batches in flight on the workers, and what becomes of them.

Each worker holds up to `depth` batches: the one it runs and the next, waiting in its pipe, so
it goes from one forward to the next without waiting for the server. The dispatcher writes a
batch's ids into a free shared input slot of the worker, owns the batch until it is answered,
and scatters the outputs to the requests. When the model raises on a batch, the batch is split
in two and each half run again, until the one item that fails is found and fails alone. A batch
waiting behind another whose callers have all gone is withdrawn: its slot's flag tells the
worker to skip it. When a
worker dies (or hangs past forward_timeout_s and is killed), its batches go back to the front
of the queue once; a second death under the same items fails them with UNAVAILABLE.

The dispatcher never touches the queue: it reports what became of batches (an `Outcome`: these
entries to retry, these halves formed, items held in an inbox, ...) and the engine, the queue's
one owner, changes the queue accordingly, as a queue actor applies the commands it is sent.
"""

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeserve.server import tracing
from pipeserve.server.engine.cost import bucket_tokens, plan_buckets
from pipeserve.server.engine.queue import Entry, Request
from pipeserve.server.errors import DeadlineExceeded, ModelFailed, Unavailable
from pipeserve.server.metrics import ModelMetrics
from pipeserve.server.schema import BatchDone, BatchFailed, BatchSkipped, ForwardBatch, Output
from pipeserve.server.tracing import BatchSpans
from pipeserve.server.workers.shm import take
from pipeserve.server.workers.supervisor import BatchOutcome, WorkerHandle

log = logging.getLogger("pipeserve.dispatch")

_MAX_ATTEMPTS = 2
# Batches a worker holds: the one it runs and the next.
PIPELINE_DEPTH = 2


# What the dispatcher reports to the engine.


@dataclass(frozen=True)
class Ran:
    """A batch was computed: what the cost model and the batcher's waits learn from."""

    items: int
    padded_tokens: int
    forward_ms: float
    calls: int = 1


@dataclass(frozen=True)
class Held:
    """`items` more (negative: fewer) wait in a worker's inbox, not started: still waiting."""

    items: int


@dataclass(frozen=True)
class Room:
    """A worker has room for another batch: the batcher looks again."""


@dataclass(frozen=True)
class Retry:
    """Entries to run again before anything else, past the queue's limit: a worker died under
    them (their first attempt), or they never reached the worker they were cut for."""

    entries: list[Entry]


@dataclass(frozen=True)
class Halves:
    """A batch the model failed on, split in two: each half runs as it is, before anything
    else, until the one item that fails is found."""

    batches: list[list[Entry]]


@dataclass(frozen=True)
class FailQueued:
    """No worker is alive: every queued entry fails with `error` rather than wait."""

    error: Exception


Outcome = Ran | Held | Room | Retry | Halves | FailQueued


@dataclass
class WorkerStats:
    """Counters of one worker slot, kept across its respawns."""

    batches: int = 0
    items: int = 0
    busy_s: float = 0.0


@dataclass(eq=False)
class _InFlight:
    batch_id: int
    entries: list[Entry]
    slot: int
    padded_tokens: int
    calls: int
    # Loop time it became the worker's running batch; None while it waits behind another.
    started_at: float | None = None
    withdrawn: bool = False
    # Its requests' forward spans, with --tracing.
    spans: BatchSpans | None = None


class Dispatcher:
    def __init__(
        self,
        metrics: ModelMetrics,
        *,
        report: Callable[[Outcome], None],
        pad_token_id: int,
        send_token_type_ids: bool,
        forward_timeout_s: float,
        depth: int = PIPELINE_DEPTH,
    ) -> None:
        self._report = report
        self._metrics = metrics
        self._pad_token_id = pad_token_id
        self._send_token_type_ids = send_token_type_ids
        self._forward_timeout_s = forward_timeout_s
        self._depth = depth
        self._ready: dict[int, WorkerHandle] = {}
        self._in_flight: dict[int, deque[_InFlight]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._room = asyncio.Event()
        self._batch_ids = itertools.count(1)
        self._last_sent: dict[int, int] = {}  # worker id -> id of the last batch sent to it
        self._token_level: frozenset[str] = frozenset()
        self._packs = False
        self.stats: dict[int, WorkerStats] = {}

    # What the batcher asks.

    def pick_worker(self) -> WorkerHandle | None:
        """The ready worker with the fewest batches in flight, if one has room; among equals
        the one sent a batch longest ago, so idle workers take turns."""
        candidates = [
            (len(self._in_flight[worker_id]), self._last_sent.get(worker_id, 0), worker_id)
            for worker_id in self._ready
            if len(self._in_flight[worker_id]) < self._depth
        ]
        return self._ready[min(candidates)[2]] if candidates else None

    async def wait_for_room(self) -> None:
        self._room.clear()
        await self._room.wait()

    @property
    def packs(self) -> bool:
        """Whether the workers run a batch as one stream of its real tokens (every worker of a
        model loads it alike): padding then costs nothing, so no batch is cut by length."""
        return self._packs

    def running(self, worker: WorkerHandle) -> bool:
        return bool(self._in_flight.get(worker.worker_id))

    def running_batch(self, worker: WorkerHandle) -> tuple[float, int, int]:
        """(loop time it started, padded tokens, calls) of the batch the worker runs."""
        head = self._in_flight[worker.worker_id][0]
        assert head.started_at is not None
        return head.started_at, head.padded_tokens, head.calls

    def held(self, worker_id: int) -> int:
        return len(self._in_flight.get(worker_id, ()))

    def dispatch(
        self, worker: WorkerHandle, entries: list[Entry], overhead_tokens: float = float("inf")
    ) -> None:
        """Sends `entries` to `worker` as one batch, run as calls by length where padding
        would cost more than `overhead_tokens` a call (see `cost.plan_buckets`), or as one
        packed call where the worker packs."""
        if worker.worker_id not in self._ready:
            # It died while the batcher waited for the batch to fill: the entries never left.
            self._report(Retry(entries))
            return
        in_flight = self._in_flight[worker.worker_id]
        slot = min(set(range(self._depth)) - {b.slot for b in in_flight})
        entries = sorted(entries, key=lambda e: e.length)
        lengths = tuple(e.length for e in entries)
        # What the forward computes: the real tokens where the worker packs, else the padded.
        if self._packs:
            cuts, tokens = (), sum(lengths)
        else:
            cuts = plan_buckets(lengths, overhead_tokens)
            tokens = bucket_tokens(lengths, cuts)
        width = max(lengths)
        worker.slots.set_withdrawn(slot, False)
        ids, types = worker.slots.views(slot, len(entries), width)
        ids.fill(self._pad_token_id)
        if self._send_token_type_ids:
            types.fill(0)
        loop = asyncio.get_running_loop()
        now = loop.time()
        for row, entry in enumerate(entries):
            ids[row, : entry.length] = entry.input_ids
            if self._send_token_type_ids and entry.token_type_ids is not None:
                types[row, : entry.length] = entry.token_type_ids
            request = entry.request
            request.queue_ms = max(request.queue_ms, (now - entry.enqueued_at) * 1000)
        # The union of the requests' asks, each request's once: derived outputs hash in Python.
        requests = dict.fromkeys(e.request for e in entries)
        outputs = tuple(dict.fromkeys(o for r in requests for o in r.outputs))
        deadlines = [e.deadline for e in entries]
        deadline = None if None in deadlines else max(deadlines)  # type: ignore[type-var]
        batch_id = next(self._batch_ids)
        spans = None
        if tracing.active is not None:
            traces = [e.request.trace for e in entries]
            spans = tracing.active.dispatched(traces, batch_id, tokens, worker.spec)
        links = () if spans is None else spans.links
        message = ForwardBatch(
            batch_id,
            slot,
            width,
            lengths,
            self._send_token_type_ids,
            outputs,
            deadline,
            links,
            cuts,
        )
        if not worker.send(message):
            # Dying, its exit not handled yet: the batch never reached it, so no attempt spent.
            log.warning("worker %d gone before batch %d was sent", worker.worker_id, batch_id)
            if spans is not None:
                spans.lost()
            self._report(Retry(entries))
            return
        self._last_sent[worker.worker_id] = batch_id
        batch = _InFlight(batch_id, entries, slot, tokens, len(cuts) + 1, spans=spans)
        in_flight.append(batch)
        if len(in_flight) == 1:
            self._start(worker, batch)
        else:
            self._report(Held(len(entries)))
        self._metrics.observe_batch(len(entries), tokens)

    def _start(self, worker: WorkerHandle, batch: _InFlight) -> None:
        """The batch is now the one the worker runs: its attempt and its hang timer start."""
        loop = asyncio.get_running_loop()
        batch.started_at = loop.time()
        for entry in batch.entries:
            entry.attempts += 1
        self._timers[worker.worker_id] = loop.call_later(
            self._forward_timeout_s, self._on_hung, worker, batch.batch_id
        )

    def withdraw(self, request: Request) -> None:
        """The request's caller has gone: each batch waiting behind a running one that now has
        no caller left is withdrawn, so its worker skips it."""
        for worker_id, in_flight in self._in_flight.items():
            for batch in itertools.islice(in_flight, 1, None):
                entries = batch.entries
                if batch.withdrawn or all(e.request is not request for e in entries):
                    continue
                if all(e.request.gone for e in entries):
                    batch.withdrawn = True
                    self._ready[worker_id].slots.set_withdrawn(batch.slot, True)
                    self._report(Held(-len(entries)))

    # What the supervisor tells, all on the event loop.

    def on_ready(self, worker: WorkerHandle) -> None:
        assert worker.ready is not None
        self._token_level = worker.ready.token_level
        self._packs = worker.ready.packs
        self._ready[worker.worker_id] = worker
        self._in_flight[worker.worker_id] = deque()
        self.stats.setdefault(worker.worker_id, WorkerStats())
        self._room.set()
        self._report(Room())

    def on_batch(self, worker: WorkerHandle, message: BatchOutcome) -> None:
        # Shared outputs are taken first: their blocks must go whatever became of the batch.
        outputs = (
            {name: take(value) for name, value in message.outputs.items()}
            if isinstance(message, BatchDone)
            else {}
        )
        in_flight = self._in_flight.get(worker.worker_id)
        if not in_flight or in_flight[0].batch_id != message.batch_id:
            return
        batch = in_flight.popleft()
        if batch.spans is not None:
            batch.spans.ended(message)
        self._timers.pop(worker.worker_id).cancel()
        if in_flight:
            self._unhold(in_flight[0])
            self._start(worker, in_flight[0])
        self._room.set()
        self._report(Room())
        match message:
            case BatchDone():
                self._done(worker, batch, outputs, message.forward_ms)
            case BatchFailed():
                self._failed(batch, message.reason)
            case BatchSkipped():
                for entry in batch.entries:
                    entry.request.fail(
                        DeadlineExceeded("deadline exceeded while queued; not computed")
                    )

    def on_exit(self, worker: WorkerHandle, alive: int) -> None:
        self._ready.pop(worker.worker_id, None)
        timer = self._timers.pop(worker.worker_id, None)
        if timer is not None:
            timer.cancel()
        held = self._in_flight.pop(worker.worker_id, ())
        for batch in held:
            if batch.spans is not None:
                batch.spans.lost()
        for waiting in list(held)[1:]:
            self._unhold(waiting)
        self._retry_or_fail([e for batch in held for e in batch.entries], worker.worker_id)
        if alive == 0:
            # Waiting out a respawn and a model load helps no caller: they can retry elsewhere.
            self._report(FailQueued(Unavailable("no model worker is alive; retry shortly")))

    def _unhold(self, waiting: _InFlight) -> None:
        """A batch that waited behind another no longer does: its items stop counting as
        waiting (a withdrawn batch's stopped when it was withdrawn)."""
        if not waiting.withdrawn:
            self._report(Held(-len(waiting.entries)))

    # Outcomes.

    def _done(
        self,
        worker: WorkerHandle,
        batch: _InFlight,
        outputs: dict[Output, np.ndarray],
        forward_ms: float,
    ) -> None:
        stats = self.stats[worker.worker_id]
        stats.batches += 1
        stats.items += len(batch.entries)
        stats.busy_s += forward_ms / 1000
        self._report(Ran(len(batch.entries), batch.padded_tokens, forward_ms, batch.calls))
        # Whether each output is cut to the item's length, found once a batch, not an item.
        columns = {o: (array, o in self._token_level) for o, array in outputs.items()}
        for row, entry in enumerate(batch.entries):
            request = entry.request
            if request.gone:
                continue
            rows = {}
            for output in request.outputs:
                array, token_level = columns[output]
                rows[output] = array[row, : entry.length] if token_level else array[row]
            request.deliver(entry.index, rows, forward_ms)

    def _failed(self, batch: _InFlight, reason: str) -> None:
        entries = [e for e in batch.entries if not e.request.gone]
        if len(entries) > 1:
            log.error(
                "batch %d (%d items) failed in the model: %s; running it in halves to find "
                "the item",
                batch.batch_id,
                len(entries),
                reason,
            )
            half = len(entries) // 2
            self._report(Halves([entries[:half], entries[half:]]))
        elif entries:
            log.error("batch %d failed in the model on its one item: %s", batch.batch_id, reason)
            entries[0].request.fail(
                ModelFailed("the model failed on this input (details in the server log)")
            )

    def _on_hung(self, worker: WorkerHandle, batch_id: int) -> None:
        in_flight = self._in_flight.get(worker.worker_id)
        if in_flight and in_flight[0].batch_id == batch_id:
            log.error(
                "worker %d hung: batch %d not answered in %.0f s; killing pid %d",
                worker.worker_id,
                batch_id,
                self._forward_timeout_s,
                worker.pid,
            )
            worker.kill()

    def _retry_or_fail(self, entries: list[Entry], worker_id: int) -> None:
        retry = []
        for entry in entries:
            if entry.request.gone:
                continue
            if entry.attempts < _MAX_ATTEMPTS:
                retry.append(entry)
            else:
                entry.request.fail(
                    Unavailable(
                        f"worker {worker_id} died while computing this request, "
                        "after a retry on another worker"
                    )
                )
        if retry:
            log.warning("retrying %d items from worker %d", len(retry), worker_id)
            self._report(Retry(retry))
