"""Every message between the server process and its worker processes, in one place.

Messages are frozen dataclasses pickled over a multiprocessing Pipe, numpy arrays included
(a batch of ids is kilobytes; outputs are copied once into the pickle). Receivers dispatch
on the message type with `match`, never on method names.
"""

from dataclasses import dataclass, field

import numpy as np

from pipeserve.server.settings import DType, LogFormat, Quantize, Task


@dataclass(frozen=True)
class DeviceSpec:
    """A worker's device: one physical GPU, or a set of CPU cores."""

    # Physical GPU as CUDA_VISIBLE_DEVICES names it (an index or a UUID).
    gpu: str | None = None
    cpus: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        if self.gpu is not None:
            return f"cuda:{self.gpu}"
        first, last = min(self.cpus), max(self.cpus)
        cores = str(first) if first == last else f"{first}-{last}"
        if len(self.cpus) != last - first + 1:
            cores = ",".join(map(str, self.cpus))
        return f"cpu:{cores}"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load its model; sent once, at spawn."""

    worker_id: int
    model: str
    revision: str | None
    task: Task
    dtype: DType
    quantize: Quantize
    device: DeviceSpec
    allow_missing_weights: bool = False
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT


# Server -> worker.


@dataclass(frozen=True)
class ForwardBatch:
    """A right-padded batch. `outputs` names what to return (the union of the callers' asks)."""

    batch_id: int
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Stop:
    """Finish the current batch, then exit."""


ToWorker = ForwardBatch | Stop


# Worker -> server.


@dataclass(frozen=True)
class WorkerReady:
    worker_id: int
    pid: int
    device: str
    model_class: str
    outputs: tuple[str, ...]
    # What Forward returns when the caller names no output.
    default_outputs: tuple[str, ...]
    # Outputs with a per-token axis ([batch, tokens, ...]), which the server slices per item.
    token_level: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class WorkerStartFailed:
    worker_id: int
    reason: str


@dataclass(frozen=True)
class BatchDone:
    batch_id: int
    outputs: dict[str, np.ndarray]
    forward_ms: float


@dataclass(frozen=True)
class BatchFailed:
    batch_id: int
    reason: str


FromWorker = WorkerReady | WorkerStartFailed | BatchDone | BatchFailed
