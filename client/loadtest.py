"""load-test a running server (closed or open loop): throughput, latency, status codes

`pipeserve loadtest` (or `pipeserve-loadtest`) sends Tokenize, Forward, Classify or
ClassifyStream requests to any running pipeserve server and reports, much as ghz does, requests
and items per second, latency percentiles, status-code counts and the server's own per-stage
times (tokenize, queue, forward) read from each response's trailing metadata.

Two load models:

* closed loop (--concurrency N): N callers, each sending its next request as soon as its last
  one is answered. The load adapts to the server; latency is measured from each send.
* open loop (--rate R): requests fall due on a fixed schedule, R per second, whatever the
  server does. Latency is measured from each request's *scheduled* time, not from when it
  actually went out, so a stalled client or a full in-flight cap (--concurrency with --rate)
  shows up as latency instead of silently thinning the load ("coordinated omission").

The module has three layers, each usable and testable alone:

1. statistics and reporting, all pure: percentile, summarize, build_report, format_report;
2. load generation over an abstract clock and sender: run_load (no gRPC in it);
3. gRPC senders and the command line: load_test, add_arguments, run, main.

Needs only the thin client (never torch); matplotlib is imported by --plot alone.
"""

import argparse
import asyncio
import contextlib
import enum
import itertools
import math
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import grpc
import grpc.aio
from google.protobuf.message import Message

from pipeserve.client import cli, convert
from pipeserve.client.errors import PipeserveError, from_status
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

RPCS = ("tokenize", "forward", "classify", "classify-stream")
# Trailing metadata key -> stage name, as server/edge/service.py sends them (milliseconds).
STAGE_KEYS = {
    "pipeserve-tokenize-ms": "tokenize",
    "pipeserve-queue-ms": "queue",
    "pipeserve-forward-ms": "forward",
}
STAGES = tuple(STAGE_KEYS.values())
DEFAULT_DURATION_S = 10.0
CONNECT_TIMEOUT_S = 10.0

# Varied lengths on purpose: batching and padding costs depend on the mix.
BUILTIN_TEXTS = (
    "I love this.",
    "Terrible service.",
    "The movie was fine, nothing special.",
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "What a wonderful surprise to find the shop still open on a Sunday evening.",
    "The battery died after two days and support never answered my emails.",
    "Not bad.",
    "The plot drags in the middle, but the last twenty minutes make up for it.",
    "She said the soup was too salty, and honestly, I have to agree with her.",
    "Absolutely brilliant performance from the whole cast.",
    "Delivery was late again.",
    "The hotel room was clean, quiet and surprisingly spacious for the price, although the "
    "breakfast left a lot to be desired and the staff seemed overwhelmed most mornings.",
    "Would not recommend.",
    "This library made our deployment twice as fast and half as painful.",
    "The instructions were confusing, the parts did not fit, and one screw was missing.",
    "A quiet, thoughtful film about growing old.",
    "Great value!",
    "After reading the first chapter I could not put the book down until three in the "
    "morning, which I regretted the next day at work but not for a second while reading.",
    "The weather is grey today.",
)


# --- 1. Statistics and reporting (pure) --------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of `values`, interpolated linearly between the two
    nearest ranks, as numpy.percentile does by default. Raises ValueError when `values` is empty.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must lie in [0, 100]; got {q}")
    return _percentile_of_sorted(sorted(values), q)


def _percentile_of_sorted(ordered: Sequence[float], q: float) -> float:
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """Count, min, mean, percentiles and max of some values; all but `count` None when empty."""

    count: int
    min: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    def to_dict(self, digits: int = 3) -> dict[str, int | float | None]:
        """JSON-ready, floats rounded (microseconds are plenty for milliseconds)."""
        return {
            name: round(value, digits) if isinstance(value, float) else value
            for name, value in asdict(self).items()
        }


def summarize(values: Iterable[float]) -> Summary:
    """The Summary of `values` (sorted once for all the percentiles)."""
    ordered = sorted(values)
    if not ordered:
        return Summary(0)
    return Summary(
        count=len(ordered),
        min=ordered[0],
        mean=math.fsum(ordered) / len(ordered),
        p50=_percentile_of_sorted(ordered, 50),
        p90=_percentile_of_sorted(ordered, 90),
        p95=_percentile_of_sorted(ordered, 95),
        p99=_percentile_of_sorted(ordered, 99),
        max=ordered[-1],
    )


@dataclass(frozen=True)
class Outcome:
    """What one request came back with: status code name, items sent, server stage times (ms)
    and, for a failure, the server's message."""

    code: str
    items: int
    stages: Mapping[str, float] = field(default_factory=dict)
    details: str = ""


@dataclass(frozen=True)
class Sample:
    """One finished request. Times are clock seconds (asyncio's monotonic loop time)."""

    index: int
    scheduled: float  # when it was due: the schedule's time (open loop) or its send (closed)
    sent: float  # when it actually went out
    done: float
    warmup: bool
    outcome: Outcome

    @property
    def latency(self) -> float:
        """Seconds from due to answered: includes any wait to be sent (no coordinated omission)."""
        return self.done - self.scheduled

    @property
    def lag(self) -> float:
        """Seconds the request went out after it was due; large means the client fell behind."""
        return self.sent - self.scheduled

    @property
    def ok(self) -> bool:
        return self.outcome.code == "OK"


@dataclass(frozen=True)
class Plan:
    """The load model and the bounds of a run.

    `rate` set means open loop: requests fall due every 1/rate seconds, and `concurrency`, if
    set, caps the requests in flight. `rate` None means closed loop with `concurrency` callers.
    `duration` (seconds) and `requests` bound the measured part, whichever ends first; the
    warmup before it (`warmup_s` seconds, then at least `warmup_requests` requests) is not
    counted.
    """

    concurrency: int | None = 1
    rate: float | None = None
    duration: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    warmup_requests: int = 0

    def __post_init__(self) -> None:
        if self.duration is None and self.requests is None:
            raise ValueError("a plan needs a duration, a request count or both")
        if self.rate is None and not self.concurrency:
            raise ValueError("a closed loop needs a concurrency of at least 1")
        for name in ("concurrency", "rate", "duration", "requests"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive; got {value}")
        if self.warmup_s < 0 or self.warmup_requests < 0:
            raise ValueError("warmup cannot be negative")

    @property
    def model(self) -> str:
        return "closed" if self.rate is None else "open"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "duration_s": self.duration,
            "requests": self.requests,
            "warmup_s": self.warmup_s,
            "warmup_requests": self.warmup_requests,
        }


@dataclass(frozen=True)
class Setup:
    """What a run sends, to whom and how hard: everything in a report that is not measured."""

    target: str
    plan: Plan
    rpc: str = "classify"
    items_per_request: int = 1
    outputs: tuple[str, ...] = ()  # Forward only; empty: the model's own outputs
    timeout: float | None = None  # deadline of each request, seconds

    def __post_init__(self) -> None:
        if self.rpc not in RPCS:
            raise ValueError(f"rpc must be one of {', '.join(RPCS)}; got {self.rpc!r}")
        if self.items_per_request < 1:
            raise ValueError(f"items_per_request must be positive; got {self.items_per_request}")
        if self.outputs and self.rpc != "forward":
            raise ValueError("outputs are for the forward rpc only")


def _ms(seconds: Iterable[float]) -> Summary:
    return summarize(1000.0 * value for value in seconds)


def build_report(
    samples: Sequence[Sample], setup: Setup, *, stopped_early: bool = False
) -> dict[str, Any]:
    """The JSON-ready report of a run. Warmup samples are left out of every figure.

    `latency_ms` covers OK responses only (fast refusals would flatter it); `error_latency_ms`
    the others. `requests_per_s` counts every answered request, `items_per_s` the items of OK
    ones. `send_lag_ms` (open loop only) shows whether the client kept to its schedule.
    """
    measured = [sample for sample in samples if not sample.warmup]
    ok = [sample for sample in measured if sample.ok]
    failed = [sample for sample in measured if not sample.ok]
    # From the first measured request's due time to the last answer: in-flight time counts.
    elapsed = (
        max(s.done for s in measured) - min(s.scheduled for s in measured) if measured else 0.0
    )
    items = sum(sample.outcome.items for sample in ok)
    codes = Counter(sample.outcome.code for sample in measured)
    # One message per failing code: a run that fails wholesale should say why.
    examples: dict[str, str] = {}
    for sample in failed:
        examples.setdefault(sample.outcome.code, sample.outcome.details)
    stages = {
        stage: summarize(s.outcome.stages[stage] for s in ok if stage in s.outcome.stages)
        for stage in STAGES
    }
    return {
        "target": setup.target,
        "rpc": setup.rpc,
        "items_per_request": setup.items_per_request,
        "outputs": list(setup.outputs),
        "timeout_s": setup.timeout,
        "load": setup.plan.to_dict(),
        "stopped_early": stopped_early,
        "warmup_completed": len(samples) - len(measured),
        "elapsed_s": round(elapsed, 3),
        "requests": len(measured),
        "ok": len(ok),
        "errors": len(failed),
        "items": items,
        "requests_per_s": round(len(measured) / elapsed, 2) if elapsed > 0 else 0.0,
        "items_per_s": round(items / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": _ms(s.latency for s in ok).to_dict(),
        "error_latency_ms": _ms(s.latency for s in failed).to_dict(),
        "send_lag_ms": _ms(s.lag for s in measured).to_dict() if setup.plan.rate else None,
        # OK first, then the most frequent codes.
        "status_codes": dict(sorted(codes.items(), key=lambda kv: (kv[0] != "OK", -kv[1]))),
        "error_examples": examples,
        # Only the stages the server reported (Tokenize and ClassifyStream report none).
        "stages_ms": {name: s.to_dict() for name, s in stages.items() if s.count},
    }


def describe_load(report: Mapping[str, Any]) -> str:
    """One line for a report's load model, e.g. 'closed loop, 4 callers back to back'."""
    load = report["load"]
    if load["model"] == "closed":
        callers = load["concurrency"]
        return f"closed loop, {callers} caller{'s' if callers != 1 else ''} back to back"
    cap = load["concurrency"]
    limit = f"at most {cap} in flight" if cap else "no limit in flight"
    return f"open loop, {load['rate']:g} requests/s scheduled, {limit}"


_LATENCY_COLUMNS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
_STAGE_COLUMNS = ("mean", "p50", "p99")
_LAG_COLUMNS = ("p50", "p99", "max")


def _header(columns: Sequence[str], indent: str = "  ") -> str:
    return indent + "".join(f"{column:>10}" for column in columns)


def _row(values: Mapping[str, Any], columns: Sequence[str], indent: str = "  ") -> str:
    return indent + "".join(
        f"{'-' if values[c] is None else format(values[c], '.2f'):>10}" for c in columns
    )


def format_report(report: Mapping[str, Any]) -> str:
    """The human-readable report, ghz style; ends with a newline."""
    items = report["items_per_request"]
    rpc = f"{report['rpc']}, {items} item{'s' if items != 1 else ''} per request"
    if report["outputs"]:
        rpc += f", outputs {','.join(report['outputs'])}"
    counted = f"{report['requests']} in {report['elapsed_s']:.2f} s"
    if report["warmup_completed"]:
        counted += f" (+{report['warmup_completed']} warmup, not counted)"
    if report["stopped_early"]:
        counted += " - stopped early"
    lines = [
        "Summary:",
        f"  Target:      {report['target']}",
        f"  RPC:         {rpc}",
        f"  Load:        {describe_load(report)}",
        f"  Requests:    {counted}",
        f"  Requests/s:  {report['requests_per_s']:.2f}",
        f"  Items/s:     {report['items_per_s']:.2f}  (items of OK responses)",
        "",
        f"Latency (ms, {report['ok']} OK responses):",
        _header(_LATENCY_COLUMNS),
        _row(report["latency_ms"], _LATENCY_COLUMNS),
    ]
    if report["errors"]:
        lines += [
            f"Error latency (ms, {report['errors']} failed requests):",
            _row(report["error_latency_ms"], _LATENCY_COLUMNS),
        ]
    if report["send_lag_ms"] is not None:
        lines += [
            "Send lag behind schedule (ms, part of latency; large means the client fell behind):",
            _header(_LAG_COLUMNS),
            _row(report["send_lag_ms"], _LAG_COLUMNS),
        ]
    lines += ["", "Status codes:"]
    for code, count in report["status_codes"].items():
        lines.append(f"  {code:<22}{count:>8}")
        if report["error_examples"].get(code):
            example = report["error_examples"][code]
            lines.append(f"    e.g. {example if len(example) <= 90 else example[:87] + '...'}")
    if not report["status_codes"]:
        lines.append("  (no requests)")
    lines.append("")
    if report["stages_ms"]:
        lines += [
            "Server stage times (ms, from trailing metadata):",
            _header(_STAGE_COLUMNS, indent=" " * 12),
        ]
        lines += [
            f"  {stage:<10}" + _row(values, _STAGE_COLUMNS, "")
            for stage, values in report["stages_ms"].items()
        ]
    else:
        lines.append("Server stage times: not reported for this RPC")
    return "\n".join(lines) + "\n"


# --- 2. Load generation (no gRPC here) ---------------------------------------------------------

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
    warmup is a prefix of the run and OVER, once said, stays said.
    """

    def __init__(self, plan: Plan, start: float, stop: asyncio.Event | None) -> None:
        self._plan = plan
        self._warmup_end = start + plan.warmup_s
        self._stop = stop
        self._first_measured: int | None = None
        self._measure_start = 0.0

    def admit(self, index: int, at: float) -> _Phase:
        plan = self._plan
        if self._stop is not None and self._stop.is_set():
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
    `stop` ends the run early: nothing new is sent, and requests in flight are awaited.
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
            samples.append(Sample(index, sent, sent, clock.now(), phase is _Phase.WARMUP, outcome))

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
            samples.append(Sample(index, scheduled, sent, clock.now(), warmup, outcome))
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


# --- 3. gRPC senders -------------------------------------------------------------------------


def stage_times(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, float]:
    """The server's per-stage times (ms) in a call's trailing metadata; absent ones left out."""
    times: dict[str, float] = {}
    for key, value in metadata or ():
        stage = STAGE_KEYS.get(key)
        if stage is None:
            continue
        with contextlib.suppress(ValueError, TypeError):  # not ours to fail a run over
            times[stage] = float(value)
    return times


def build_requests(
    rpc: str, texts: Sequence[str], items_per_request: int, outputs: Sequence[str] = ()
) -> list[Message]:
    """The run's distinct requests, built once so that building them is never timed.

    Request r takes the next `items_per_request` texts, cycling through `texts`, so consecutive
    requests differ; the sequence repeats after len(texts) / gcd(len(texts), items) requests.
    """
    if not texts:
        raise ValueError("no texts to send")
    period = len(texts) // math.gcd(len(texts), items_per_request)
    requests: list[Message] = []
    for number in range(period):
        first = number * items_per_request
        chunk = [texts[(first + j) % len(texts)] for j in range(items_per_request)]
        if rpc == "tokenize":
            requests.append(convert.tokenize_request(chunk))
        elif rpc == "forward":
            requests.append(convert.forward_request(chunk, outputs=outputs))
        else:
            requests.append(convert.classify_request(chunk))
    return requests


class _UnarySender:
    """Tokenize, Forward or Classify: one call per request, stage times from its trailers."""

    def __init__(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable,
        requests: Sequence[Message],
        items: int,
        seconds: float | None,
    ) -> None:
        self._method = method
        self._requests = requests
        self._items = items
        self._seconds = seconds

    async def __call__(self, index: int) -> Outcome:
        call = self._method(self._requests[index % len(self._requests)], timeout=self._seconds)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            stages = stage_times(error.trailing_metadata())
            return Outcome(error.code().name, self._items, stages, error.details() or "")
        return Outcome("OK", self._items, stage_times(await call.trailing_metadata()))

    async def close(self) -> None:
        pass


class _Stream:
    """One ClassifyStream call: writes requests with ids and matches the answers to them."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._pending: dict[str, asyncio.Future[tuple[str, str]]] = {}
        # gRPC takes one write at a time per call; concurrent callers take turns.
        self._write_lock = asyncio.Lock()
        self.ended = False
        self._reader = asyncio.create_task(self._read())

    async def ask(
        self, request_id: str, request: pb.ClassifyRequest, seconds: float | None
    ) -> tuple[str, str]:
        """Sends one request; returns its status code name and, for a failure, the message."""
        answer: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            try:
                async with self._write_lock:
                    await self._call.write(pb.ClassifyStreamRequest(id=request_id, request=request))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # The stream ended under us; its reader settles `answer` with the stream's code.
                await asyncio.gather(self._reader, return_exceptions=True)
                return answer.result() if answer.done() else ("UNKNOWN", "stream write failed")
            # The stream has no deadline of its own; --timeout bounds each request instead.
            async with asyncio.timeout(seconds):
                return await answer
        except TimeoutError:
            return "DEADLINE_EXCEEDED", f"no answer on the stream within {seconds:g} s"
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        code, details = "UNKNOWN", ""
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:
                answer = self._pending.get(message.id)
                if answer is None or answer.done():
                    continue  # timed out already
                if message.WhichOneof("outcome") == "error":
                    error = from_status(message.error.code, message.error.message)
                    answer.set_result((error.code.name, error.details))
                else:
                    answer.set_result(("OK", ""))
            code = (await self._call.code()).name
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details() or ""
        finally:
            self.ended = True
            # Whatever is still waiting will never be answered on this stream.
            if code == "OK":
                code, details = "UNKNOWN", "the server ended the stream without answering"
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_result((code, details))

    async def close(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.done_writing()
        # Every answer is in by now, so the server ends the stream at once; don't hang if not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), CONNECT_TIMEOUT_S)
        self._call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class _StreamSender:
    """ClassifyStream: every request is one message on a shared stream, matched by id. A stream
    that ends (server restart) is reopened by the next request. No stage times: the stream's
    messages carry no metadata."""

    def __init__(
        self, stub: InferenceStub, requests: Sequence[Message], items: int, seconds: float | None
    ) -> None:
        self._stub = stub
        self._requests = requests
        self._items = items
        self._seconds = seconds
        self._stream: _Stream | None = None
        self._ids = itertools.count()

    async def __call__(self, index: int) -> Outcome:
        if self._stream is None or self._stream.ended:
            self._stream = _Stream(self._stub.ClassifyStream())
        request = self._requests[index % len(self._requests)]
        assert isinstance(request, pb.ClassifyRequest)
        code, details = await self._stream.ask(str(next(self._ids)), request, self._seconds)
        return Outcome(code, self._items, details=details)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()


def _sender(
    stub: InferenceStub, setup: Setup, requests: Sequence[Message]
) -> _UnarySender | _StreamSender:
    items, seconds = setup.items_per_request, setup.timeout
    if setup.rpc == "classify-stream":
        return _StreamSender(stub, requests, items, seconds)
    method = {"tokenize": stub.Tokenize, "forward": stub.Forward, "classify": stub.Classify}
    return _UnarySender(method[setup.rpc], requests, items, seconds)


async def _open_channel(target: str) -> grpc.aio.Channel:
    options = convert.build_channel_options(convert.DEFAULT_MAX_MESSAGE_BYTES, None)
    channel = grpc.aio.insecure_channel(target, options=options)
    try:
        # Connect first: a wrong --target fails in seconds with one line, not with a report
        # full of UNAVAILABLE.
        await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
    except TimeoutError:
        await channel.close()
        raise PipeserveError(
            grpc.StatusCode.UNAVAILABLE,
            f"no server answered at {target} within {CONNECT_TIMEOUT_S:g} s",
        ) from None
    return channel


class _Progress:
    """The progress line on stderr: elapsed time, requests and errors so far, current rate."""

    def __init__(self, samples: list[Sample], stream: TextIO) -> None:
        self._samples = samples
        self._stream = stream
        # On a terminal the line rewrites itself; in a log it is one line a second.
        self._tty = stream.isatty()
        self._clock = LoopClock()
        self._start = self._last_time = self._clock.now()
        self._last_count = self._errors = 0

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.write()

    def write(self, final: bool = False) -> None:
        now, count = self._clock.now(), len(self._samples)
        self._errors += sum(1 for s in self._samples[self._last_count : count] if not s.ok)
        span = (now - self._start) if final else (now - self._last_time)
        done = count if final else count - self._last_count
        rate = done / span if span > 0 else 0.0
        self._last_time, self._last_count = now, count
        warmup = " (warmup)" if count and self._samples[-1].warmup and not final else ""
        line = (
            f"{'done in' if final else 'after'} {now - self._start:.1f} s: {count} requests"
            f"{warmup}, {self._errors} errors, {rate:.1f} requests/s{' overall' if final else ''}"
        )
        if self._tty:
            line = f"\r{line:<79}"
        end = "\n" if final or not self._tty else ""
        print(line, end=end, file=self._stream, flush=True)


async def load_test(
    setup: Setup,
    texts: Sequence[str] = BUILTIN_TEXTS,
    *,
    samples: list[Sample] | None = None,
    stop: asyncio.Event | None = None,
    progress: TextIO | None = None,
) -> list[Sample]:
    """Runs `setup` against its server and returns the samples (see run_load); pass them to
    build_report. `progress`, if given, gets a progress line once a second and a final one."""
    samples = [] if samples is None else samples
    # Before connecting, so that texts the client cannot send fail at once.
    requests = build_requests(setup.rpc, texts, setup.items_per_request, setup.outputs)
    channel = await _open_channel(setup.target)
    try:
        sender = _sender(InferenceStub(channel), setup, requests)
        reporter = _Progress(samples, progress) if progress is not None else None
        ticker = asyncio.create_task(reporter.run()) if reporter is not None else None
        try:
            await run_load(sender, setup.plan, samples=samples, stop=stop)
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
            await sender.close()
        if reporter is not None:
            reporter.write(final=True)
    finally:
        await channel.close()
    return samples


# --- Plot (matplotlib, optional) -------------------------------------------------------------

PLOT_MISSING = "error: --plot needs matplotlib: pip install 'pipeserve[plot]'"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_report(samples: Sequence[Sample], report: Mapping[str, Any], path: str | Path) -> None:
    """Writes latency over time (top) and a latency histogram (bottom) to `path` (PNG, SVG...)."""
    # A bare Figure, not pyplot: no display, no global state; savefig picks Agg for PNG.
    from matplotlib.figure import Figure

    start = min((s.scheduled for s in samples), default=0.0)
    measured = [s for s in samples if not s.warmup]
    figure = Figure(figsize=(10, 7), layout="constrained")
    over_time, histogram = figure.subplots(2, 1)
    groups = (
        ("warmup", [s for s in samples if s.warmup], "tab:gray", "."),
        ("OK", [s for s in measured if s.ok], "tab:blue", "."),
        ("error", [s for s in measured if not s.ok], "tab:red", "x"),
    )
    for label, group, color, marker in groups:
        if group:
            over_time.scatter(
                [s.scheduled - start for s in group],
                [1000 * s.latency for s in group],
                s=6,
                color=color,
                marker=marker,
                label=f"{label} ({len(group)})",
            )
    latency = report["latency_ms"]
    if latency["p99"] is not None:
        over_time.axhline(latency["p99"], color="tab:orange", linestyle="--", label="p99")
    over_time.set(
        xlabel="scheduled send time (s since start)",
        ylabel="latency (ms)",
        title="Latency over time",
    )
    over_time.legend(loc="upper right")
    ok_ms = [1000 * s.latency for s in measured if s.ok]
    if ok_ms:
        histogram.hist(ok_ms, bins=max(10, min(100, int(math.sqrt(len(ok_ms))))), color="tab:blue")
        for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            histogram.axvline(latency[name], color="black", linestyle=style, label=name)
        histogram.legend(loc="upper right")
    histogram.set(xlabel="latency (ms)", ylabel="requests", title="Latency of OK responses")
    figure.suptitle(
        f"{report['rpc']} on {report['target']}: {describe_load(report)}; "
        f"{report['requests_per_s']:.1f} requests/s"
    )
    figure.savefig(path, dpi=100)


# --- Command line --------------------------------------------------------------------------


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def parse_warmup(text: str) -> tuple[float, int]:
    """--warmup: '2' or '2s' is two seconds, '50r' fifty requests -> (seconds, requests)."""
    value = text.strip().lower()
    try:
        if value.endswith("r"):
            requests = int(value[:-1])
            if requests >= 0:
                return 0.0, requests
        else:
            seconds = float(value.removesuffix("s"))
            if seconds >= 0 and math.isfinite(seconds):
                return seconds, 0
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected seconds (2, 2s) or requests (50r), got {text!r}")


def read_texts(path: str, column: str | None = None) -> list[str]:
    """Texts from a file ('-': stdin): one per line, or one tab-separated `column` per row.

    `column` is a header name (the first row must then be the header, and is skipped) or a
    number counting from 1, as `cut -f` (every row is data). Trailing whitespace is stripped
    (SST-2 ends its sentences with a space) and blank texts are dropped.
    """
    content = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    lines = content.splitlines()
    if column is None:
        cells = lines
    else:
        rows = [line.split("\t") for line in lines]
        if column.isdigit() and int(column) >= 1:
            index = int(column) - 1
        else:
            header = [name.strip() for name in rows[0]] if rows else []
            if column not in header:
                raise cli.UsageError(
                    f"column {column!r} is not in the header row of {path}: {header}"
                )
            index, rows = header.index(column), rows[1:]
        cells = [row[index] for row in rows if len(row) > index]
    texts = [cell.rstrip() for cell in cells if cell.strip()]
    if not texts:
        raise cli.UsageError(f"no texts in {path}")
    return texts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loadtest arguments (cli adds --target, --timeout and --indent)."""
    what = parser.add_argument_group("what to send")
    what.add_argument("--rpc", choices=RPCS, default="classify", help="(default: classify)")
    what.add_argument(
        "--outputs",
        type=cli.comma_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="forward only: outputs to ask for, e.g. logits or last_hidden_state "
        "(default: the model's own)",
    )
    what.add_argument(
        "--items-per-request",
        type=_positive(int),
        default=1,
        metavar="N",
        help="texts per request (default: 1)",
    )
    what.add_argument(
        "--texts",
        metavar="FILE",
        help="texts to send, one per line ('-': stdin); default: 20 built-in English sentences",
    )
    what.add_argument(
        "--column",
        metavar="NAME|N",
        help="with --texts: take this tab-separated column, by header name (e.g. sentence) "
        "or by number from 1",
    )
    load = parser.add_argument_group("load (closed loop unless --rate)")
    load.add_argument(
        "-c",
        "--concurrency",
        type=_positive(int),
        metavar="N",
        help="closed loop: N callers, each sending back to back (default: 1); with --rate: "
        "the most requests in flight (default: no limit)",
    )
    load.add_argument(
        "--rate",
        type=_positive(float),
        metavar="R",
        help="open loop: R requests per second on a fixed schedule; latency counts from each "
        "request's scheduled time",
    )
    load.add_argument(
        "--duration",
        type=_positive(float),
        metavar="SECONDS",
        help=f"measure this long (default: {DEFAULT_DURATION_S:g} unless --requests)",
    )
    load.add_argument(
        "-n",
        "--requests",
        type=_positive(int),
        metavar="N",
        help="measure N requests (with --duration, whichever ends first)",
    )
    load.add_argument(
        "--warmup",
        type=parse_warmup,
        default=(0.0, 0),
        metavar="SECONDS|Nr",
        help="first seconds (2, 2s) or requests (50r) sent but not counted (default: none)",
    )
    out = parser.add_argument_group("report")
    out.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw latency over time and a latency histogram (needs pipeserve[plot])",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")


def setup_from_args(args: argparse.Namespace) -> Setup:
    """The Setup the parsed arguments ask for; UsageError when they do not fit together."""
    if args.outputs and args.rpc != "forward":
        raise cli.UsageError("--outputs is for --rpc forward")
    if args.column is not None and args.texts is None:
        raise cli.UsageError("--column needs --texts")
    warmup_s, warmup_requests = args.warmup
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    plan = Plan(
        concurrency=args.concurrency if args.rate is not None else (args.concurrency or 1),
        rate=args.rate,
        duration=duration,
        requests=args.requests,
        warmup_s=warmup_s,
        warmup_requests=warmup_requests,
    )
    return Setup(
        target=args.target,
        plan=plan,
        rpc=args.rpc,
        items_per_request=args.items_per_request,
        outputs=tuple(args.outputs or ()),
        timeout=args.timeout,
    )


async def _run_until_done_or_interrupted(
    setup: Setup, texts: Sequence[str], samples: list[Sample], progress: TextIO | None
) -> bool:
    """Runs the test; the first Ctrl-C ends it early but still reports. True if it did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def interrupted() -> None:
        stop.set()
        # A second Ctrl-C gets Python's default: KeyboardInterrupt, no report.
        loop.remove_signal_handler(signal.SIGINT)

    # Without signal handlers here (Windows, or not the main thread), Ctrl-C just aborts.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        await load_test(setup, texts, samples=samples, stop=stop, progress=progress)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
    return stop.is_set()


def run(args: argparse.Namespace) -> int:
    """Runs the load test the arguments describe and prints its report.

    Exit status 0 when at least one request succeeded, 1 when none did (or the server cannot be
    reached), 2 for bad usage or --plot without matplotlib.
    """
    setup = setup_from_args(args)
    if args.plot is not None and not have_matplotlib():
        print(PLOT_MISSING, file=sys.stderr)
        return 2
    texts = read_texts(args.texts, args.column) if args.texts is not None else BUILTIN_TEXTS
    samples: list[Sample] = []
    progress = None if args.quiet else sys.stderr
    try:
        stopped = asyncio.run(_run_until_done_or_interrupted(setup, texts, samples, progress))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    report = build_report(samples, setup, stopped_early=stopped)
    if args.json:
        cli.print_json(report, args)
    else:
        sys.stdout.write(format_report(report))
    if args.plot is not None:
        plot_report(samples, report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0 if report["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`pipeserve-loadtest ...`: the same as `pipeserve loadtest ...`."""
    return cli.main(["loadtest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
