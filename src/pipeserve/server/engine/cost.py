"""What a batch costs a worker, learnt from the batches it has run, and how to cut a batch
into length buckets at that cost.

Forward time is close to linear in the padded tokens of a call (longest x count) plus a fixed
cost per call (kernel launches, Python, small matrices using the cores badly). A batch runs as
one or more calls, one per length bucket (see `plan_buckets`), so its time is fitted as
`calls x fixed + tokens x per_token`. The ratio of the two, in tokens, is what decides whether
splitting pays: padding costs tokens, an extra call costs the fixed part. It differs by model
and device (large on a GPU, small on a CPU), so it is fitted online rather than configured.
"""

import itertools
from collections.abc import Sequence

# Until the fit has seen batches of different sizes: a CPU-like overhead, in tokens.
_PRIOR_OVERHEAD_TOKENS = 64.0
_MAX_OVERHEAD_TOKENS = 8192.0
# Older batches count less, so the fit follows changes (warm-up, other load on the host).
_DECAY = 0.99
_MIN_BATCHES = 8


class BatchCost:
    def __init__(self) -> None:
        # Decayed sums of calls c, tokens t and ms y: the normal equations of y = a c + b t.
        self._n = self._y = 0.0
        self._cc = self._ct = self._tt = self._cy = self._ty = 0.0

    def observe(self, padded_tokens: int, forward_ms: float, calls: int = 1) -> None:
        """A batch ran as `calls` calls over `padded_tokens` in all, in `forward_ms`."""
        c, t, y = float(calls), float(padded_tokens), forward_ms
        self._n = self._n * _DECAY + 1
        self._y = self._y * _DECAY + y
        self._cc = self._cc * _DECAY + c * c
        self._ct = self._ct * _DECAY + c * t
        self._tt = self._tt * _DECAY + t * t
        self._cy = self._cy * _DECAY + c * y
        self._ty = self._ty * _DECAY + t * y

    def _fit(self) -> tuple[float, float] | None:
        """(ms per call, ms per padded token), once batches of different sizes have been seen.
        With one call a batch this is the usual line's intercept and slope."""
        if self._n < _MIN_BATCHES:
            return None
        # tokens' variance once the calls are accounted for: zero when all batches match.
        det = self._cc * self._tt - self._ct * self._ct
        if det <= self._cc * self._n:
            return None
        per_call = (self._cy * self._tt - self._ct * self._ty) / det
        per_token = (self._cc * self._ty - self._ct * self._cy) / det
        if per_token <= 0:
            return None
        return per_call, per_token

    @property
    def overhead_tokens(self) -> float:
        """Fixed cost of a call, in padded tokens' worth of compute."""
        fit = self._fit()
        if fit is None:
            return _PRIOR_OVERHEAD_TOKENS
        per_call, per_token = fit
        return min(max(per_call / per_token, 0.0), _MAX_OVERHEAD_TOKENS)

    def predict_ms(self, padded_tokens: int, calls: int = 1) -> float:
        """Expected forward time of a batch; the mean batch's until the fit has data."""
        fit = self._fit()
        if fit is None:
            return self._y / self._n if self._n else 0.0
        per_call, per_token = fit
        return max(per_call, 0.0) * calls + per_token * padded_tokens


def plan_buckets(lengths: Sequence[int], overhead_tokens: float) -> tuple[int, ...]:
    """Where to cut a batch sorted by length (ascending) into calls: the rows at which each
    call after the first starts, chosen to minimise the calls' cost, `overhead_tokens` each
    plus their padded tokens (count x longest). Exact: a dynamic programme over the rows where
    the length changes (a cut between equal lengths never pays), in plain Python, which beats
    numpy at batch sizes; skipped when the batch's whole padding costs less than a call."""
    n = len(lengths)
    if n <= 1 or overhead_tokens >= lengths[-1] * n - sum(lengths):
        return ()
    bounds = [i for i in range(n) if i == 0 or lengths[i] != lengths[i - 1]]
    # best[k]: the cheapest cost of the rows before bounds[k]; then of all rows.
    best = [0.0]
    start = [0]
    for k in range(1, len(bounds) + 1):
        end = bounds[k] if k < len(bounds) else n
        longest = lengths[end - 1]
        cost, first = min((best[i] + (end - bounds[i]) * longest, i) for i in range(k))
        best.append(cost + overhead_tokens)
        start.append(first)
    cuts = []
    k = start[-1]
    while k > 0:
        cuts.append(bounds[k])
        k = start[k]
    return tuple(reversed(cuts))


def bucket_tokens(lengths: Sequence[int], cuts: Sequence[int]) -> int:
    """Padded tokens of a sorted batch run as the calls that `cuts` start."""
    bounds = [0, *cuts, len(lengths)]
    return sum((hi - lo) * max(lengths[lo:hi]) for lo, hi in itertools.pairwise(bounds))
