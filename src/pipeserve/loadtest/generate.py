"""Load generation over an abstract clock and sender, closed or open loop; no gRPC here."""

import asyncio
import enum
import itertools
from collections.abc import Awaitable, Callable
from typing import Protocol

from pipeserve.loadtest.plan import Outcome, Plan, Sample, hopeless

Sender = Callable[[int], Awaitable[Outcome]]
"""Sends request number `index` and returns its outcome; raising is a bug, not a failed call."""


class Clock(Protocol):
    """Where time comes from, so that tests can stall it at will."""

    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class LoopClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.now()))


class _Phase(enum.Enum):
    WARMUP = "warmup"
    MEASURED = "measured"
    OVER = "over"


class _Admission:
    """Decides, request by request in sending order, whether it is warmup, measured or too late.

    Requests are numbered as they are admitted, and each condition only ever moves one way, so
    warmup is a prefix of the run and OVER, once said, stays said. Answers come back through
    `answered`, which ends a hopeless run (see plan.hopeless).
    """

    def __init__(self, plan: Plan, start: float, stop: asyncio.Event | None) -> None:
        self._plan = plan
        self._warmup_end = start + plan.warmup_s
        self._stop = stop
        self._first_measured: int | None = None
        self._measure_start = 0.0
        self._gave_up = False

    def answered(self, samples: list[Sample], sample: Sample) -> None:
        samples.append(sample)
        # Only the first `give_up_after` answers decide, so they are looked at once.
        after = self._plan.give_up_after
        if len(samples) == after and hopeless(samples, after) is not None:
            self._gave_up = True

    def admit(self, index: int, at: float) -> _Phase:
        plan = self._plan
        if self._gave_up or (self._stop is not None and self._stop.is_set()):
            return _Phase.OVER
        if index < plan.warmup_requests or at < self._warmup_end:
            return _Phase.WARMUP
        if self._first_measured is None:
            self._first_measured, self._measure_start = index, at
        if plan.requests is not None and index - self._first_measured >= plan.requests:
            return _Phase.OVER
        if plan.duration is not None and at >= self._measure_start + plan.duration:
            return _Phase.OVER
        return _Phase.MEASURED


async def run_load(
    send: Sender,
    plan: Plan,
    *,
    clock: Clock | None = None,
    samples: list[Sample] | None = None,
    stop: asyncio.Event | None = None,
) -> list[Sample]:
    """Runs `plan` with `send` and returns a Sample per answered request, in answer order.

    `samples`, if given, is appended to as answers arrive (a progress line can watch it). Setting
    `stop` ends the run early: nothing new is sent, and requests in flight are awaited; so does a
    hopeless start (Plan.give_up_after).
    """
    clock = clock or LoopClock()
    samples = [] if samples is None else samples
    start = clock.now()
    admission = _Admission(plan, start, stop)
    if plan.rate is None:
        await _closed_loop(send, plan.concurrency or 1, clock, admission, samples)
    else:
        await _open_loop(send, plan, start, clock, admission, samples)
    return samples


async def _closed_loop(
    send: Sender, callers: int, clock: Clock, admission: _Admission, samples: list[Sample]
) -> None:
    next_index = 0

    async def caller() -> None:
        nonlocal next_index
        while True:
            # No await between admitting and numbering: callers cannot take the same number.
            sent = clock.now()
            phase = admission.admit(next_index, sent)
            if phase is _Phase.OVER:
                return
            index, next_index = next_index, next_index + 1
            outcome = await send(index)
            sample = Sample(index, sent, sent, clock.now(), phase is _Phase.WARMUP, outcome)
            admission.answered(samples, sample)

    async with asyncio.TaskGroup() as group:
        for _ in range(callers):
            group.create_task(caller())


async def _open_loop(
    send: Sender,
    plan: Plan,
    start: float,
    clock: Clock,
    admission: _Admission,
    samples: list[Sample],
) -> None:
    assert plan.rate is not None
    interval = 1.0 / plan.rate
    slots = asyncio.Semaphore(plan.concurrency) if plan.concurrency else None

    async def request(index: int, scheduled: float, warmup: bool) -> None:
        try:
            sent = clock.now()
            outcome = await send(index)
            admission.answered(
                samples, Sample(index, scheduled, sent, clock.now(), warmup, outcome)
            )
        finally:
            if slots is not None:
                slots.release()

    async with asyncio.TaskGroup() as group:
        for index in itertools.count():
            # Multiplied, not summed: the schedule never drifts, and a late dispatcher catches
            # up by sending the overdue requests at once, each keeping its own due time.
            scheduled = start + index * interval
            phase = admission.admit(index, scheduled)
            if phase is _Phase.OVER:
                break
            await clock.sleep_until(scheduled)
            if slots is not None:
                await slots.acquire()  # waiting here is latency too: `scheduled` stays put
            group.create_task(request(index, scheduled, phase is _Phase.WARMUP))
