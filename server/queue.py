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

    def put(self, entries: list[Entry]) -> None:
        """Queues a request's entries, all or none, so no request is half accepted."""
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

    def take(self, max_tokens: int, max_size: int, now: float) -> list[Entry]:
        """Removes and returns the next batch (see `pick_batch`)."""
        self._drop_gone(now)
        if not self._pending:
            return []
        chosen = pick_batch([e.length for e in self._pending], max_tokens, max_size)
        taken = [self._pending[i] for i in chosen]
        chosen_set = set(chosen)
        self._pending = [e for i, e in enumerate(self._pending) if i not in chosen_set]
        for entry in taken:
            entry.queue_ms = (now - entry.enqueued_at) * 1000
        return taken

    def has_full_batch(self, max_tokens: int, max_size: int) -> bool:
        """Whether waiting longer cannot make the next batch bigger."""
        lengths = [e.length for e in self._pending]
        chosen = pick_batch(lengths, max_tokens, max_size)
        return len(chosen) >= max_size or len(chosen) < len(lengths)


def pick_batch(lengths: list[int], max_tokens: int, max_size: int) -> list[int]:
    """Indices of the next batch from queued lengths (index 0 is the oldest).

    The oldest entry always goes, so nothing starves. Around it the batch grows with the
    entries closest in length, so padding stays small, while the padded cost (longest x
    count) fits `max_tokens` and the count fits `max_size`.
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    anchor = order.index(0)
    lo = hi = anchor
    longest = lengths[0]
    while hi - lo + 1 < max_size:
        left = order[lo - 1] if lo > 0 else None
        right = order[hi + 1] if hi + 1 < len(order) else None
        candidates = [c for c in (left, right) if c is not None]
        if not candidates:
            break
        best = min(candidates, key=lambda c: abs(lengths[c] - lengths[0]))
        new_longest = max(longest, lengths[best])
        if new_longest * (hi - lo + 2) > max_tokens:
            # Shorter neighbours cost no more padding than what is already there.
            if left is not None and max(longest, lengths[left]) * (hi - lo + 2) <= max_tokens:
                best, new_longest = left, max(longest, lengths[left])
            else:
                break
        longest = new_longest
        if best == left:
            lo -= 1
        else:
            hi += 1
    return [order[i] for i in range(lo, hi + 1)]
