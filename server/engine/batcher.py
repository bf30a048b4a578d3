"""The dynamic batcher: one task that turns the shared queue into batches for idle workers.

A batch is cut when a worker is free, so a lone request goes at once and, under load,
requests pile up into batches while every worker is busy. The cut happens at the token
budget (longest x count), at the batch size limit, or where splitting by length is cheaper
than padding (as `cost.BatchCost` learns from the batches run); see `queue.pick_batch`.

How long a free worker waits for more entries: with `max_wait_ms` > 0, until the oldest entry
has waited that long. With 0 (the default) it adapts to the load. Callers under load tend to
come back together (a batch answers many at once and they send again), so a free worker that
just ran a batch of n items waits for n items to queue up again, but never longer than a
tenth of that batch's forward time: a burst is not split into a batch of one and a batch of
the rest, and the wait costs at most a tenth of the throughput. After a batch of one (a lone
caller) nothing waits, which keeps single-caller latency at its minimum.
"""

import asyncio

from pipeserve.server.engine.queue import Queue
from pipeserve.server.workers.pool import WorkerPool

# Adaptive wait: at most this share of the last batch's forward time, and this many ms.
_WAIT_SHARE = 0.1
_WAIT_CAP_MS = 50.0


class Batcher:
    def __init__(
        self,
        queue: Queue,
        pool: WorkerPool,
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
    ) -> None:
        self._queue = queue
        self._pool = pool
        self._max_tokens = max_batch_tokens
        self._max_size = max_batch_size
        self._max_wait_ms = max_wait_ms

    def _fill_target(self) -> tuple[int, float]:
        """(entries worth waiting for, longest wait in ms) for the next batch."""
        if self._max_wait_ms > 0:
            return self._max_size, self._max_wait_ms
        size, forward_ms = self._pool.last_batch
        if size <= 1:
            return 1, 0.0
        return min(size, self._max_size), min(forward_ms * _WAIT_SHARE, _WAIT_CAP_MS)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._queue.wait_for_items(loop)
            worker = await self._pool.idle_worker()
            target, wait_ms = self._fill_target()
            until = self._queue.oldest_enqueued_at + wait_ms / 1000
            overhead = self._pool.cost.overhead_tokens
            while (
                loop.time() < until
                and len(self._queue) < target
                and not self._queue.has_full_batch(self._max_tokens, self._max_size, overhead)
            ):
                await self._queue.wait_for_more(until, loop)
            batch = self._queue.take(self._max_tokens, self._max_size, overhead, loop.time())
            if batch:
                self._pool.dispatch(worker, batch)
            else:
                self._pool.release(worker)
