"""The dynamic batcher: one task that turns the shared queue into batches for the workers.

A batch is cut for a worker with room, so a lone request goes at once and, under load,
requests pile up into batches while every worker is busy. The cut happens at the token
budget (longest x count), at the batch size limit, or where splitting by length is cheaper
than padding (as `cost.BatchCost` learns from the batches run); see `queue.pick_batch`. Where
the workers pack a batch's real tokens (no compute on padding), lengths do not matter and
batches are cut in arrival order.

A worker holds its next batch while it runs one (see `dispatch.py`). For a worker that is
running, the next batch is cut as soon as a full one is queued, else shortly before the
running batch should end (a quarter of its expected forward time before), so that it
neither waits for the server nor gets a batch smaller than the arrivals allow.

How long an idle worker waits for more entries: with `max_wait_ms` > 0, until the oldest entry
has waited that long. With 0 (the default) it adapts to the load. Callers under load tend to
come back together (a batch answers many at once and they send again), so a free worker that
just ran a batch of n items waits for n items to queue up again, but never longer than a
tenth of that batch's forward time: a burst is not split into a batch of one and a batch of
the rest, and the wait costs at most a tenth of the throughput. After a batch of one (a lone
caller) nothing waits, which keeps single-caller latency at its minimum.
"""

import asyncio
from typing import Protocol

from pipeserve.server.engine.cost import BatchCost
from pipeserve.server.engine.dispatch import Dispatcher
from pipeserve.server.engine.queue import Queue

# Adaptive wait: at most this share of the last batch's forward time, and this many ms.
_WAIT_SHARE = 0.1
_WAIT_CAP_MS = 50.0
# The next batch of a running worker is cut this share of the running forward before its end.
_LEAD_SHARE = 0.25


class BatchHistory(Protocol):
    """What the batches run so far say, as the engine keeps it."""

    @property
    def cost(self) -> BatchCost: ...

    @property
    def last_batch(self) -> tuple[int, float]:
        """(items, forward ms) of the batch that finished last."""
        ...


class Batcher:
    def __init__(
        self,
        queue: Queue,
        dispatcher: Dispatcher,
        history: BatchHistory,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
    ) -> None:
        self._queue = queue
        self._dispatcher = dispatcher
        self._history = history
        self._max_tokens = max_batch_tokens
        self._max_size = max_batch_size
        self._max_wait_ms = max_wait_ms

    def _fill_target(self) -> tuple[int, float]:
        """(entries worth waiting for, longest wait in ms) for an idle worker's next batch."""
        if self._max_wait_ms > 0:
            return self._max_size, self._max_wait_ms
        size, forward_ms = self._history.last_batch
        if size <= 1:
            return 1, 0.0
        return min(size, self._max_size), min(forward_ms * _WAIT_SHARE, _WAIT_CAP_MS)

    def _cut_at(self) -> float | None:
        """Loop time to cut the next batch at, for the best worker; None when it has no room."""
        dispatcher = self._dispatcher
        worker = dispatcher.pick_worker()
        if worker is None:
            return None
        if dispatcher.running(worker):
            started, padded_tokens, calls = dispatcher.running_batch(worker)
            forward_s = self._history.cost.predict_ms(padded_tokens, calls) / 1000
            return started + (1 - _LEAD_SHARE) * forward_s
        target, wait_ms = self._fill_target()
        if len(self._queue) >= target:
            return float("-inf")
        return self._queue.oldest_enqueued_at + wait_ms / 1000

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue, dispatcher = self._queue, self._dispatcher
        while True:
            # 1. Wait for work and for a worker with room for it.
            await queue.wait_for_items(loop)
            until = self._cut_at()
            if until is None:
                await dispatcher.wait_for_room()
                continue
            # 2. Let the batch fill while that is worth it; a poke (a batch done) looks again.
            overhead = self._history.cost.overhead_tokens
            in_order = dispatcher.packs
            if loop.time() < until and not queue.has_full_batch(
                self._max_tokens, self._max_size, overhead, in_order
            ):
                await queue.wait_for_more(until, loop)
                continue
            # 3. Cut it and send it.
            worker = dispatcher.pick_worker()
            if worker is None:
                continue
            batch = queue.take(self._max_tokens, self._max_size, overhead, loop.time(), in_order)
            if batch:
                dispatcher.dispatch(worker, batch, overhead)
