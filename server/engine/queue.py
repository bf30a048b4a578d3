"""The queue between callers and the batcher: one entry per sequence, in arrival order.

Entries whose caller has gone (future cancelled) or whose deadline has passed are dropped
here, before they can reach a worker.
"""

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np

from pipeserve.server.errors import DeadlineExceeded, Overloaded


@dataclass(eq=False)
class Entry:
    """One sequence waiting for the model. The future gets this item's outputs."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    outputs: tuple[str, ...]
    future: asyncio.Future
    enqueued_at: float
    deadline: float | None = None
    # Batches this entry was sent in; a second worker death under it fails it.
    attempts: int = 0
    queue_ms: float = 0.0

    @property
    def length(self) -> int:
        return len(self.input_ids)


class Queue:
    def __init__(self, max_items: int, retry_after_ms: int = 100) -> None:
        self._max_items = max_items
        self._retry_after_ms = retry_after_ms
        self._pending: list[Entry] = []
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, entries: list[Entry], now: float) -> None:
        """Queues a request's entries, all or none, so no request is half accepted."""
        if len(self._pending) + len(entries) > self._max_items:
            self._drop_gone(now)  # entries whose callers left must not hold places
        if len(self._pending) + len(entries) > self._max_items:
            raise Overloaded(
                f"server overloaded: {len(self._pending)} items queued, limit "
                f"max_queued_items={self._max_items}; retry later",
                self._retry_after_ms,
            )
        self._pending.extend(entries)
        self._changed.set()

    def requeue(self, entries: list[Entry]) -> None:
        """Puts entries back at the front (a retry after a worker died), past the limit."""
        self._pending[:0] = entries
        self._changed.set()

    def fail_all(self, error: Exception) -> None:
        """Fails every queued entry with `error` and empties the queue."""
        for entry in self._pending:
            if not entry.future.done():
                entry.future.set_exception(error)
        self._pending = []

    def _drop_gone(self, now: float) -> None:
        kept = []
        for entry in self._pending:
            if entry.future.done():
                continue
            if entry.deadline is not None and now >= entry.deadline:
                entry.future.set_exception(
                    DeadlineExceeded("deadline exceeded while queued; not computed")
                )
                continue
            kept.append(entry)
        self._pending = kept

    async def wait_for_items(self, loop: asyncio.AbstractEventLoop) -> None:
        """Returns once at least one live entry is queued."""
        while True:
            self._drop_gone(loop.time())
            if self._pending:
                return
            self._changed.clear()
            await self._changed.wait()

    async def wait_for_more(self, until: float, loop: asyncio.AbstractEventLoop) -> None:
        """Waits for another arrival or until `until` (loop time), whichever first."""
        self._changed.clear()
        timeout = until - loop.time()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    @property
    def oldest_enqueued_at(self) -> float:
        return self._pending[0].enqueued_at if self._pending else float("-inf")

    def take(
        self, max_tokens: int, max_size: int, overhead_tokens: float, now: float
    ) -> list[Entry]:
        """Removes and returns the next batch (see `pick_batch`)."""
        self._drop_gone(now)
        if not self._pending:
            return []
        lengths = [e.length for e in self._pending]
        chosen = pick_batch(lengths, max_tokens, max_size, overhead_tokens)
        taken = [self._pending[i] for i in chosen]
        chosen_set = set(chosen)
        self._pending = [e for i, e in enumerate(self._pending) if i not in chosen_set]
        for entry in taken:
            entry.queue_ms = (now - entry.enqueued_at) * 1000
        return taken

    def has_full_batch(self, max_tokens: int, max_size: int, overhead_tokens: float) -> bool:
        """Whether waiting longer cannot make the next batch bigger."""
        lengths = [e.length for e in self._pending]
        chosen = pick_batch(lengths, max_tokens, max_size, overhead_tokens)
        return len(chosen) >= max_size or len(chosen) < len(lengths)


def pick_batch(
    lengths: list[int], max_tokens: int, max_size: int, overhead_tokens: float = 0.0
) -> list[int]:
    """Indices of the next batch from queued lengths (index 0 is the oldest).

    The oldest entry always goes, so nothing starves. With the entries sorted by length, the
    batch is the run of neighbours around it that gives the most real tokens per unit of
    cost, where a batch costs `overhead_tokens` plus its padded tokens (longest x count):
    similar lengths go together, and a batch is split where padding would cost more than
    running another batch. Ties go to the bigger batch. The padded tokens stay within
    `max_tokens` (a single entry over it still goes alone) and the count within `max_size`.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ordered = [lengths[i] for i in order]
    prefix = [0]
    for length in ordered:
        prefix.append(prefix[-1] + length)
    anchor = order.index(0)
    best, best_score = (anchor, anchor), 0.0
    for lo in range(max(0, anchor - max_size + 1), anchor + 1):
        for hi in range(anchor, min(len(ordered), lo + max_size)):
            count = hi - lo + 1
            padded = ordered[hi] * count
            if padded > max_tokens and count > 1:
                break  # a longer window only pads more
            score = (prefix[hi + 1] - prefix[lo]) / (overhead_tokens + padded)
            best_count = best[1] - best[0] + 1
            if score > best_score * (1 + 1e-9) or (
                score >= best_score * (1 - 1e-9) and count > best_count
            ):
                best, best_score = (lo, hi), score
    return [order[i] for i in range(best[0], best[1] + 1)]
