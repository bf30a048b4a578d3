"""A batch run as length buckets: its rows (sorted by length by the server) cut into calls at
the rows the server chose (`engine.cost.plan_buckets`), each call padded only to its own
longest row, so that little compute goes on padding; the calls' outputs are put back together
as one batch's. Any backend, any output: the runner sees ordinary, shorter batches.
"""

import itertools
from collections.abc import Sequence

import numpy as np

from pipeserve.server.backends.runner import ModelRunner
from pipeserve.server.schema import Output
from pipeserve.server.workers.derived import forward_derived


def forward_buckets(
    runner: ModelRunner,
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    lengths: Sequence[int],
    cuts: Sequence[int],
    outputs: Sequence[Output],
) -> dict[Output, np.ndarray]:
    """The `outputs` of a right-padded batch whose rows have `lengths`, run as one call per
    bucket (`cuts`: the rows at which each call after the first starts)."""
    bounds = [0, *cuts, len(lengths)]
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        width = max(lengths[lo:hi])
        mask = (np.arange(width) < np.asarray(lengths[lo:hi])[:, None]).astype(np.int64)
        types = None if token_type_ids is None else token_type_ids[lo:hi, :width]
        parts.append(forward_derived(runner, input_ids[lo:hi, :width], mask, types, outputs))
    if len(parts) == 1:
        return parts[0]
    return {output: _concat([part[output] for part in parts]) for output in outputs}


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    """Calls' outputs stacked along the batch axis, each other axis zero-padded to the largest
    (a token axis to the longest call's width, a mask axis to the most masks); the server cuts
    each row back to its own length."""
    shape = np.max([a.shape for a in arrays], axis=0)
    out = np.zeros((sum(len(a) for a in arrays), *shape[1:]), dtype=arrays[0].dtype)
    row = 0
    for array in arrays:
        out[(slice(row, row + len(array)), *map(slice, array.shape[1:]))] = array
        row += len(array)
    return out
