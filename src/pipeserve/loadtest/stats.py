"""Percentiles and summaries of latencies; pure."""

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


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
