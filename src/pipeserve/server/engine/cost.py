"""What a batch costs a worker, learnt from the batches it has run.

Forward time is close to linear in the padded tokens of a batch (longest x count) plus a
fixed cost per batch (kernel launches, Python, small matrices using the cores badly). The
ratio of the two, in tokens, is what decides whether splitting a batch by length pays:
padding costs tokens, an extra batch costs the fixed part. It differs by model and device
(large on a GPU, small on a CPU), so it is fitted online rather than configured.
"""

# Until the fit has seen batches of different sizes: a CPU-like overhead, in tokens.
_PRIOR_OVERHEAD_TOKENS = 64.0
_MAX_OVERHEAD_TOKENS = 8192.0
# Older batches count less, so the fit follows changes (warm-up, other load on the host).
_DECAY = 0.99
_MIN_BATCHES = 8


class BatchCost:
    def __init__(self) -> None:
        self._n = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, padded_tokens: int, forward_ms: float) -> None:
        self._n = self._n * _DECAY + 1
        self._x = self._x * _DECAY + padded_tokens
        self._y = self._y * _DECAY + forward_ms
        self._xx = self._xx * _DECAY + padded_tokens * padded_tokens
        self._xy = self._xy * _DECAY + padded_tokens * forward_ms

    def _fit(self) -> tuple[float, float] | None:
        """(fixed ms, ms per padded token), once batches of different sizes have been seen."""
        if self._n < _MIN_BATCHES:
            return None
        mean_x, mean_y = self._x / self._n, self._y / self._n
        variance = self._xx / self._n - mean_x * mean_x
        if variance <= 1.0:  # all batches the same size: the slope is unknown
            return None
        per_token = (self._xy / self._n - mean_x * mean_y) / variance
        if per_token <= 0:
            return None
        return mean_y - per_token * mean_x, per_token

    @property
    def overhead_tokens(self) -> float:
        """Fixed cost of a batch, in padded tokens' worth of compute."""
        fit = self._fit()
        if fit is None:
            return _PRIOR_OVERHEAD_TOKENS
        fixed, per_token = fit
        return min(max(fixed / per_token, 0.0), _MAX_OVERHEAD_TOKENS)

    def predict_ms(self, padded_tokens: int) -> float:
        """Expected forward time of a batch; the mean batch's until the fit has data."""
        fit = self._fit()
        if fit is None:
            return self._y / self._n if self._n else 0.0
        fixed, per_token = fit
        return max(fixed, 0.0) + per_token * padded_tokens
