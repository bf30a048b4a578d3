"""What a load test is: its plan and setup, and what each request came back with."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Every inference RPC, by the name of its `pipeserve` subcommand (ClassifyStream's: its own).
RPCS = (
    "tokenize",
    "forward",
    "classify",
    "classify-stream",
    "embed",
    "rerank",
    "classify-zero-shot",
    "classify-tokens",
    "fill-mask",
)
# The options of the task RPCs, as their client calls name them, and the RPCs that take each.
OPTIONS = {
    "query": ("rerank",),
    "candidate_labels": ("classify-zero-shot",),
    "multi_label": ("classify-zero-shot",),
    "aggregation_strategy": ("classify-tokens",),
    "top_k": ("fill-mask",),
}
# What a Rerank asks of its documents unless told otherwise.
DEFAULT_QUERY = "Which of these is about a film?"
DEFAULT_DURATION_S = 10.0


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
    counted. A run whose first `give_up_after` answers, warmup included, all failed with one
    status code ends there (see hopeless); None never gives up.
    """

    concurrency: int | None = 1
    rate: float | None = None
    duration: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    warmup_requests: int = 0
    give_up_after: int | None = 20

    def __post_init__(self) -> None:
        if self.duration is None and self.requests is None:
            raise ValueError("a plan needs a duration, a request count or both")
        if self.rate is None and not self.concurrency:
            raise ValueError("a closed loop needs a concurrency of at least 1")
        for name in ("concurrency", "rate", "duration", "requests", "give_up_after"):
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
            "give_up_after": self.give_up_after,
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
    model: str = ""  # the served model's name; empty: the server's default
    # The task RPC's own options (OPTIONS), as its client call takes them.
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rpc not in RPCS:
            raise ValueError(f"rpc must be one of {', '.join(RPCS)}; got {self.rpc!r}")
        if self.items_per_request < 1:
            raise ValueError(f"items_per_request must be positive; got {self.items_per_request}")
        if self.outputs and self.rpc != "forward":
            raise ValueError("outputs are for the forward rpc only")
        for name in self.options:
            if self.rpc not in OPTIONS.get(name, ()):
                raise ValueError(f"{name} is not an option of the {self.rpc} rpc")
        if self.rpc == "classify-zero-shot" and not self.options.get("candidate_labels"):
            raise ValueError("the classify-zero-shot rpc needs candidate_labels")


def hopeless(samples: Sequence[Sample], after: int | None) -> Outcome | None:
    """The failure of the first `after` answers of a run when they all failed with one status
    code, else None. A wrong target, token or model fails every call the same way: the rest of
    the run would only repeat it."""
    if after is None or len(samples) < after:
        return None
    code = samples[0].outcome.code
    if code == "OK" or any(sample.outcome.code != code for sample in samples[:after]):
        return None
    return samples[0].outcome
