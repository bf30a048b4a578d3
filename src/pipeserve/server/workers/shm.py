"""Tensors in shared memory between the server and its workers, so batches and large outputs
cross the process boundary without being pickled through a pipe.

Each worker slot owns `depth` input slots (created by the server, kept across respawns): the
server writes a batch's padded ids straight into a free slot and sends only its shape, and the
worker reads them in place. A slot also holds a flag the server raises when every caller of the
batch waiting there has gone, so the worker skips it instead of computing it for nobody.
Outputs over `INLINE_OUTPUT_BYTES` go into a block the worker creates and the server copies out
and unlinks; smaller ones travel in the message itself.
Every process here shares multiprocessing's resource tracker, which unlinks whatever a crash
leaves behind.
"""

from multiprocessing.shared_memory import SharedMemory

import numpy as np

from pipeserve.server.schema import SharedArray, SlotSpec

# Below this a pickled array costs less than creating and mapping a block.
INLINE_OUTPUT_BYTES = 256 * 1024


class InputSlots:
    """The input slots of one worker, mapped as numpy arrays."""

    def __init__(self, spec: SlotSpec, blocks: list[SharedMemory]) -> None:
        self.spec = spec
        self._blocks = blocks
        self._arrays = [
            np.ndarray((2 * spec.capacity + 1,), dtype=np.int64, buffer=block.buf)
            for block in blocks
        ]

    @classmethod
    def create(cls, depth: int, capacity: int) -> "InputSlots":
        blocks = [SharedMemory(create=True, size=(2 * capacity + 1) * 8) for _ in range(depth)]
        return cls(SlotSpec(tuple(b.name for b in blocks), capacity), blocks)

    @classmethod
    def attach(cls, spec: SlotSpec) -> "InputSlots":
        return cls(spec, [SharedMemory(name) for name in spec.names])

    def views(self, slot: int, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, token_type_ids) of a slot, shaped [rows, width]."""
        size, capacity = rows * width, self.spec.capacity
        array = self._arrays[slot]
        return (
            array[:size].reshape(rows, width),
            array[capacity : capacity + size].reshape(rows, width),
        )

    def set_withdrawn(self, slot: int, withdrawn: bool) -> None:
        self._arrays[slot][-1] = withdrawn

    def withdrawn(self, slot: int) -> bool:
        return bool(self._arrays[slot][-1])

    def close(self, unlink: bool) -> None:
        self._arrays = []
        for block in self._blocks:
            block.close()
            if unlink:
                block.unlink()


def share(array: np.ndarray) -> "np.ndarray | SharedArray":
    """`array` itself when small enough to pickle, else a copy in a new shared block."""
    if array.nbytes <= INLINE_OUTPUT_BYTES:
        return array
    block = SharedMemory(create=True, size=array.nbytes)
    np.ndarray(array.shape, dtype=array.dtype, buffer=block.buf)[...] = array
    shared = SharedArray(block.name, array.shape, array.dtype.str)
    block.close()
    return shared


def take(value: "np.ndarray | SharedArray") -> np.ndarray:
    """The array a `share` sent: copied out of its block, which is then unlinked."""
    if isinstance(value, np.ndarray):
        return value
    block = SharedMemory(value.name)
    try:
        return np.ndarray(value.shape, dtype=np.dtype(value.dtype), buffer=block.buf).copy()
    finally:
        block.close()
        block.unlink()
