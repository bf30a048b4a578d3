"""A request's outputs as the engine hands them to the request path: each output's items
stacked once, where the request's last item is computed, and sliced per item only where a
task needs one item at a time (`Outputs.item`). The same value crosses the pipe to a front-end
process (`frontends/hub.py`), its arrays in shared memory when large (`shared`/`taken`).
"""

from dataclasses import dataclass, replace

import numpy as np

from pipeserve.server.workers.shm import SharedArray, share, take


@dataclass(frozen=True)
class Outputs:
    """Output name -> every item's rows stacked along axis 0; token-level outputs (and any
    whose first axis varies by item, an item's mask rows in fill-mask) are zero-padded to the
    longest item. `lengths` are the items' lengths in tokens."""

    arrays: dict[str, np.ndarray | SharedArray]
    lengths: tuple[int, ...]
    token_level: frozenset[str]

    @classmethod
    def gather(
        cls,
        rows: list[dict[str, np.ndarray]],
        lengths: tuple[int, ...],
        token_level: frozenset[str],
    ) -> "Outputs":
        names = rows[0].keys() if rows else ()
        arrays = {name: stack_rows([r[name] for r in rows], name in token_level) for name in names}
        return cls(arrays, lengths, token_level)  # type: ignore[arg-type]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]  # type: ignore[return-value]

    def item(self, index: int) -> dict[str, np.ndarray]:
        """Item `index`'s outputs, token-level ones cut to its length."""
        length = self.lengths[index]
        return {
            name: array[index, :length] if name in self.token_level else array[index]
            for name, array in self.arrays.items()
        }  # type: ignore[index]

    def shared(self) -> "Outputs":
        """These outputs with their large arrays moved to shared memory, to send."""
        return replace(self, arrays={n: share(a) for n, a in self.arrays.items()})  # type: ignore[arg-type]

    def taken(self) -> "Outputs":
        """Received outputs with every array in this process's memory."""
        return replace(self, arrays={n: take(a) for n, a in self.arrays.items()})


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
