"""Every message between the server process and its worker processes, in one place.

Messages are frozen dataclasses pickled over a multiprocessing Pipe. Batches' ids and large
outputs stay in shared memory (`workers/shm.py`), so a message is a few hundred bytes.
Receivers dispatch on the message type with `match`, never on method names.
"""

from dataclasses import dataclass, field

import numpy as np

from pipeserve.server.settings import Backend, DType, LogFormat, Quantize, Task

# The two descriptors of shared memory (`workers/shm.py`) that messages carry.


@dataclass(frozen=True)
class SlotSpec:
    """Where a worker finds its input slots: each holds ids, token type ids and the withdrawn
    flag, int64."""

    names: tuple[str, ...]
    capacity: int  # ids per array (longest x count of the largest batch)


@dataclass(frozen=True)
class SharedArray:
    """An output array left in a shared-memory block for the receiver to take."""

    name: str
    shape: tuple[int, ...]
    dtype: str


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
    # What runs the model, resolved (never auto); openvino serves the `converted` folder.
    backend: Backend = Backend.TORCH
    converted: str | None = None
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # Filled in by the supervisor: this worker slot's shared input slots.
    slots: SlotSpec | None = None


# Server -> worker.


@dataclass(frozen=True)
class ForwardBatch:
    """A right-padded batch of `len(lengths)` rows x `width` ids, written into input slot
    `slot` (token type ids too when `has_types`). `outputs` names what to return (the union
    of the callers' asks)."""

    batch_id: int
    slot: int
    width: int
    lengths: tuple[int, ...]
    has_types: bool
    outputs: tuple[str, ...]
    # time.monotonic() after which every row's caller has given up: skip the forward.
    deadline: float | None = None


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
    # Float32 arrays with the batch axis first; large ones left in shared memory.
    outputs: dict[str, np.ndarray | SharedArray]
    forward_ms: float


@dataclass(frozen=True)
class BatchFailed:
    batch_id: int
    reason: str


@dataclass(frozen=True)
class BatchSkipped:
    """The batch was not computed: it waited past its deadline behind the one before it, or
    every caller in it left (the server withdrew it)."""

    batch_id: int


FromWorker = WorkerReady | WorkerStartFailed | BatchDone | BatchFailed | BatchSkipped


@dataclass(frozen=True)
class WorkerStatus:
    """What ModelInfo shows of one worker slot."""

    worker_id: int
    device: str
    pid: int
    ready: bool
    batches: int
    items: int
    restarts: int
    busy: bool


# Front end -> engine, with several front ends (--frontends). Times are time.monotonic(),
# one clock for every process on the host.


@dataclass(frozen=True)
class Submit:
    """A request's sequences for the shared queue."""

    request_id: int
    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray | None, ...]
    outputs: tuple[str, ...]
    deadline: float | None


@dataclass(frozen=True)
class Cancel:
    """The caller of a submitted request has gone."""

    request_id: int


@dataclass(frozen=True)
class AskStatus:
    ask_id: int


@dataclass(frozen=True)
class Listening:
    """Sent by a front end once its gRPC server is bound."""

    port: int


ToEngine = Submit | Cancel | AskStatus | Listening


# Engine -> front end. Each carries the items waiting for a worker, for admission.


@dataclass(frozen=True)
class Answered:
    """A request's outputs, by name: rows stacked (token-level ones padded) along axis 0."""

    request_id: int
    outputs: dict[str, np.ndarray | SharedArray]
    queue_ms: float
    forward_ms: float
    waiting: int


@dataclass(frozen=True)
class Refused:
    request_id: int
    error: Exception
    waiting: int


@dataclass(frozen=True)
class EngineState:
    """Sent when the live workers change: front ends mirror it in their health."""

    alive: int
    model: WorkerReady | None
    waiting: int


@dataclass(frozen=True)
class StatusReply:
    ask_id: int
    workers: tuple[WorkerStatus, ...]
    waiting: int


@dataclass(frozen=True)
class Drain:
    """Stop taking calls, finish those in flight within the grace period, then exit."""


FromEngine = Answered | Refused | EngineState | StatusReply | Drain
