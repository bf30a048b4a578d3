"""The dynamic batcher: one task that turns the shared queue into batches for idle workers.

A batch is cut when a worker is free, so a lone request goes at once and, under load,
requests pile up into batches while every worker is busy. The cut happens at the token
budget (longest x count), the batch size limit or, when max_wait_ms > 0, once the oldest
entry has waited that long; see `queue.pick_batch` for which entries go together.
"""

import asyncio

from pipeserve.server.pool import WorkerPool
from pipeserve.server.queue import Queue


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
        self._max_wait_s = max_wait_ms / 1000

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._queue.wait_for_items(loop)
            worker = await self._pool.idle_worker()
            if self._max_wait_s > 0:
                until = self._queue.oldest_enqueued_at + self._max_wait_s
                while loop.time() < until and not self._queue.has_full_batch(
                    self._max_tokens, self._max_size
                ):
                    await self._queue.wait_for_more(until, loop)
            batch = self._queue.take(self._max_tokens, self._max_size, loop.time())
            if batch:
                self._pool.dispatch(worker, batch)
            else:
                self._pool.release(worker)
