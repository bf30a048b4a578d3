"""The queue between callers and the batcher: one entry per sequence, in arrival order.

A call first takes an admission permit for its items (before it is tokenized), so a full queue
refuses at once instead of tokenizing work it would drop. Entries whose caller has gone (its
request ended) or whose deadline has passed are dropped here, before they reach a worker.

The engine (`core.py`) is its one owner: only the engine's calls and what it settles of the
dispatcher's reports change it, and the batcher takes its batches from it.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pipeserve.server.errors import DeadlineExceeded, Overloaded
from pipeserve.server.schema import Output, Outputs

if TYPE_CHECKING:
    from pipeserve.server.tracing import RequestSpans

# A batch is picked among the oldest entries only, this many times the batch size: it costs
# the same however long the queue, and older entries keep going first.
_WINDOW_BATCHES = 4

# How long a caller refused by a full queue is asked to wait before retrying.
RETRY_AFTER_MS = 100


@dataclass(eq=False)
class Request:
    """One call's sequences (of `lengths` tokens) on their way through the engine. Its future
    gets their `Outputs`, gathered once all are computed."""

    future: asyncio.Future
    outputs: tuple[Output, ...]
    lengths: tuple[int, ...]
    token_level: frozenset[str] = frozenset()
    remaining: int = field(init=False)
    rows: list[dict[Output, np.ndarray] | None] = field(init=False)
    # The slowest item's time queued and in forward, in milliseconds.
    queue_ms: float = 0.0
    forward_ms: float = 0.0
    # Its spans in the engine, with --tracing.
    trace: "RequestSpans | None" = None

    def __post_init__(self) -> None:
        self.remaining = len(self.lengths)
        self.rows = [None] * self.remaining

    @property
    def gone(self) -> bool:
        """Answered, failed or cancelled: its remaining entries need no compute."""
        return self.future.done()

    def deliver(self, index: int, outputs: dict[Output, np.ndarray], forward_ms: float) -> None:
        self.rows[index] = outputs
        self.forward_ms = max(self.forward_ms, forward_ms)
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():  # not cut meanwhile (`fail`)
            self.future.set_result(self._gather())

    def _gather(self) -> Outputs:
        """The items' rows, stacked: the one place a request's outputs are gathered."""
        rows: list[dict[Output, np.ndarray]] = self.rows  # type: ignore[assignment]
        arrays = {
            name: stack_rows([r[name] for r in rows], name in self.token_level)
            for name in self.outputs
        }
        return Outputs(arrays, self.lengths, self.token_level)

    def fail(self, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False)
class Entry:
    """One sequence of a request, waiting for the model."""

    request: Request
    index: int
    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    enqueued_at: float
    deadline: float | None = None
    # Batches this entry ran in when a worker died; a second death under it fails it.
    attempts: int = 0

    @property
    def length(self) -> int:
        return len(self.input_ids)


class Admission(Protocol):
    """What admitting a call returns: its places, released once its entries are queued."""

    def release(self) -> None: ...


class Permit:
    """Places in the queue held for a call between admission and queueing."""

    def __init__(self, queue: "Queue", items: int) -> None:
        self._queue = queue
        self.items = items

    def release(self) -> None:
        self._queue.release(self.items)
        self.items = 0


class Queue:
    def __init__(self, max_items: int) -> None:
        self._max_items = max_items
        self._pending: list[Entry] = []
        # Batches formed already (halves of a batch the model failed on), run before the rest.
        self._formed: deque[list[Entry]] = deque()
        self._reserved = 0
        # Entries sent to a worker as its next batch, not started yet: still waiting.
        self._held = 0
        # The batcher's wait, woken by arrivals and pokes.
        self._waiter: asyncio.Future | None = None

    def __len__(self) -> int:
        return len(self._pending) + sum(map(len, self._formed))

    @property
    def waiting(self) -> int:
        """Items not started on a worker: queued here or waiting in a worker's inbox."""
        return len(self) + self._held

    @property
    def reserved(self) -> int:
        """Items of admitted calls not queued yet (being tokenized)."""
        return self._reserved

    def release(self, items: int) -> None:
        """Frees places held for `items` entries (a permit's, see `Permit.release`)."""
        self._reserved -= items

    def hold(self, items: int) -> None:
        """Counts `items` (negative: no longer) as waiting in a worker's inbox."""
        self._held += items

    def admit(self, items: int, now: float) -> Permit:
        """Holds places for `items` entries, or refuses the call if the queue has none."""
        if self.waiting + self._reserved + items > self._max_items:
            self.drop_gone(now)  # entries whose callers left must not hold places
        if self.waiting + self._reserved + items > self._max_items:
            raise overloaded(self.waiting + self._reserved, self._max_items)
        self._reserved += items
        return Permit(self, items)

    def put(self, entries: list[Entry], permit: Admission) -> None:
        """Queues a request's entries in the places its permit holds."""
        permit.release()
        self._pending.extend(entries)
        self._wake()

    def requeue(self, entries: list[Entry]) -> None:
        """Puts entries back at the front (a retry after a worker died), past the limit."""
        self._pending[:0] = entries
        self._wake()

    def requeue_formed(self, batches: list[list[Entry]]) -> None:
        """Queues batches to run as they are, before anything else."""
        self._formed.extendleft(reversed(batches))
        self._wake()

    def poke(self) -> None:
        """Wakes the batcher to look again (a worker has room)."""
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _wake(self._waiter)

    def fail_all(self, error: Exception) -> None:
        """Fails every queued entry's request with `error` and empties the queue."""
        for entry in self._pending:
            entry.request.fail(error)
        for batch in self._formed:
            for entry in batch:
                entry.request.fail(error)
        self._pending = []
        self._formed.clear()

    def drop_gone(self, now: float) -> None:
        """Drops the pending entries whose callers have gone or whose deadline has passed."""
        kept = []
        for entry in self._pending:
            if entry.request.gone:
                continue
            if entry.deadline is not None and now >= entry.deadline:
                entry.request.fail(DeadlineExceeded("deadline exceeded while queued; not computed"))
                continue
            kept.append(entry)
        self._pending = kept

    async def wait_for_items(self, loop: asyncio.AbstractEventLoop) -> None:
        """Returns once at least one live entry is queued."""
        while True:
            self.drop_gone(loop.time())
            if self._pending or self._formed:
                return
            await self._changed_or(None, loop)

    async def wait_for_more(self, until: float, loop: asyncio.AbstractEventLoop) -> None:
        """Waits for another arrival (or a poke) or until `until` (loop time)."""
        if until > loop.time():
            await self._changed_or(until, loop)

    async def _changed_or(self, until: float | None, loop: asyncio.AbstractEventLoop) -> None:
        # A bare future and a timer: the batcher waits once per arrival under load, and
        # asyncio.wait_for would wrap each wait in a task of its own.
        waiter = self._waiter = loop.create_future()
        timer = None if until is None else loop.call_at(until, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    @property
    def oldest_enqueued_at(self) -> float:
        if self._formed:
            return float("-inf")
        return self._pending[0].enqueued_at if self._pending else float("-inf")

    def take(
        self,
        max_tokens: int,
        max_size: int,
        overhead_tokens: float,
        now: float,
        in_order: bool = False,
    ) -> list[Entry]:
        """Removes and returns the next batch: a formed one first, else see `pick_batch`."""
        if self._formed:
            return [e for e in self._formed.popleft() if not e.request.gone]
        self.drop_gone(now)
        if not self._pending:
            return []
        lengths = [e.length for e in self._pending[: max_size * _WINDOW_BATCHES]]
        chosen = pick_batch(lengths, max_tokens, max_size, overhead_tokens, in_order)
        if len(chosen) == len(self._pending):
            taken, self._pending = self._pending, []
        else:
            taken = [self._pending[i] for i in chosen]
            chosen_set = set(chosen)
            self._pending = [e for i, e in enumerate(self._pending) if i not in chosen_set]
        return taken

    def has_full_batch(
        self, max_tokens: int, max_size: int, overhead_tokens: float, in_order: bool = False
    ) -> bool:
        """Whether waiting longer cannot make the next batch bigger."""
        if self._formed or len(self._pending) >= max_size * _WINDOW_BATCHES:
            return True
        lengths = [e.length for e in self._pending]
        chosen = pick_batch(lengths, max_tokens, max_size, overhead_tokens, in_order)
        return len(chosen) >= max_size or len(chosen) < len(lengths)


def overloaded(queued: int, max_items: int) -> Overloaded:
    """The refusal of a full queue, from the queue or from a front end that checks first."""
    return Overloaded(
        f"server overloaded: {queued} items queued, limit max_queued_items={max_items}; "
        "retry later",
        RETRY_AFTER_MS,
    )


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def pick_batch(
    lengths: list[int],
    max_tokens: int,
    max_size: int,
    overhead_tokens: float = 0.0,
    in_order: bool = False,
) -> list[int]:
    """Indices of the next batch from queued lengths (index 0 is the oldest).

    `in_order` (the workers pack, so padding costs no compute): the oldest entries, as many as
    fit. Otherwise the oldest entry always goes, so nothing starves. With the entries sorted by
    length, the batch is the run of neighbours around it that gives the most real tokens per
    unit of cost, where a batch costs `overhead_tokens` plus its padded tokens (longest x count):
    similar lengths go together, and a batch is split where padding would cost more than
    running another batch. Ties go to the bigger batch. The padded tokens stay within
    `max_tokens` (a single entry over it still goes alone) and the count within `max_size`.
    """
    if not lengths:
        return []
    if in_order:
        return _oldest(lengths, max_tokens, max_size)
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


def _oldest(lengths: list[int], max_tokens: int, max_size: int) -> list[int]:
    """The oldest entries whose padded tokens (the input slot's size: longest x count) stay
    within `max_tokens`, at most `max_size` of them; the oldest goes alone if over it."""
    longest = 0
    for count, length in enumerate(lengths[:max_size]):
        longest = max(longest, length)
        if count and longest * (count + 1) > max_tokens:
            return list(range(count))
    return list(range(min(len(lengths), max_size)))


def stack_rows(rows: list[np.ndarray], token_level: bool) -> np.ndarray:
    """Stacks items' outputs; token-level ones, and others whose first axis varies from batch
    to batch (an item's mask rows, see fill_mask.gather_masks), are zero-padded to the
    longest item."""
    if not token_level and len({row.shape for row in rows}) == 1:
        return np.stack(rows)
    longest = max(len(r) for r in rows)
    out = np.zeros((len(rows), longest, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
