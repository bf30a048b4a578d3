"""Every message between the server's processes (engine, workers, front ends), in one place.

Messages are frozen dataclasses pickled over a multiprocessing Pipe. Batches' ids and large
outputs stay in shared memory (`workers/shm.py`), so a message is a few hundred bytes.
Receivers dispatch on the message type with `match`, never on method names.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeserve.server.settings import Backend, DType, LogFormat, Quantize, Settings, Task
from pipeserve.server.terms import FLAG_TERMS, Terms

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
    """Everything a worker needs to load its model; sent once, as it starts."""

    worker_id: int
    model: str
    revision: str | None
    task: Task
    dtype: DType
    quantize: Quantize
    device: DeviceSpec
    allow_missing_weights: bool = False
    # How whoever asked for the model names its settings, for the load's messages.
    terms: Terms = FLAG_TERMS
    # What runs the model, resolved (never auto); openvino serves the `converted` folder.
    backend: Backend = Backend.TORCH
    converted: str | None = None
    torch_compile: bool = False
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # Filled in by the supervisor: this worker slot's shared input slots.
    slots: SlotSpec | None = None
    # --tracing: the worker exports a span per batch of traced requests (`server/tracing.py`).
    tracing: bool = False


# Server -> worker.


@dataclass(frozen=True)
class Pooled:
    """A sentence embedding, [hidden] an item: last_hidden_state pooled with `mode` (cls,
    mean, max or lasttoken) leaving out each item's first `skip` tokens (an excluded prompt);
    see pipeline/pooling.py."""

    mode: str
    skip: int = 0


@dataclass(frozen=True)
class MaskRows:
    """The logits rows of each item's `token_id` tokens, [masks, vocab] an item; see
    pipeline/fill_mask.py's gather_masks."""

    token_id: int


# An output a request asks the workers for: one of the backend's by name, or one derived from
# the backend's in the worker right after the forward, so that only it crosses shared memory.
Output = str | Pooled | MaskRows


@dataclass(frozen=True)
class ForwardBatch:
    """A right-padded batch of `len(lengths)` rows x `width` ids, written into input slot
    `slot` (token type ids too when `has_types`). `outputs` says what to return (the union
    of the callers' asks). `cuts`: the rows at which each call after the first starts, when
    the batch runs as several calls by length (rows then sorted by length)."""

    batch_id: int
    slot: int
    width: int
    lengths: tuple[int, ...]
    has_types: bool
    outputs: tuple[Output, ...]
    # time.monotonic() after which every row's caller has given up: skip the forward.
    deadline: float | None = None
    # With --tracing: the W3C traceparent of each traced request's forward span, which the
    # worker's span of the batch links to (see `server/tracing.py`).
    links: tuple[str, ...] = ()
    cuts: tuple[int, ...] = ()


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
    # Each output's shape past the batch and token axes, so an answer's size is known before
    # its forward (a [batch, tokens, vocab] output: (vocab,)).
    item_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # It runs a batch as one stream of its real tokens (backends/packing.py): padding costs
    # nothing, so batches are cut in arrival order and run as one call.
    packs: bool = False


@dataclass(frozen=True)
class WorkerStartFailed:
    worker_id: int
    reason: str


@dataclass(frozen=True)
class BatchDone:
    batch_id: int
    # Float32 arrays with the batch axis first; large ones left in shared memory.
    outputs: dict[Output, np.ndarray | SharedArray]
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


@dataclass(frozen=True)
class Outputs:
    """A request's outputs, as the engine gathers them once its last item is computed (and
    sends them to a front end): output name -> the items' rows stacked along axis 0,
    token-level outputs (and any whose first axis varies by item, an item's mask rows in
    fill-mask) zero-padded to the longest item; `lengths` are the items' lengths in tokens.
    Sliced per item only where a task needs one item at a time (`item`)."""

    arrays: dict[Output, np.ndarray]
    lengths: tuple[int, ...]
    token_level: frozenset[str]

    def __getitem__(self, name: Output) -> np.ndarray:
        return self.arrays[name]

    def item(self, index: int) -> dict[Output, np.ndarray]:
        """Item `index`'s outputs, token-level ones cut to its length."""
        length = self.lengths[index]
        return {
            name: array[index, :length] if name in self.token_level else array[index]
            for name, array in self.arrays.items()
        }


# Front end -> engine, with several front ends (--frontends). Times are time.monotonic(),
# one clock for every process on the host.


@dataclass(frozen=True)
class Submit:
    """A request's sequences for the queue of model `model`."""

    request_id: int
    model: str
    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray | None, ...]
    outputs: tuple[Output, ...]
    deadline: float | None
    # With --tracing: the W3C traceparent of the call's server span, the engine's spans' parent.
    traceparent: str | None = None


@dataclass(frozen=True)
class Cancel:
    """The caller of a submitted request has gone."""

    request_id: int


@dataclass(frozen=True)
class AskStatus:
    ask_id: int
    model: str


@dataclass(frozen=True)
class Listening:
    """Sent by a front end once its gRPC server is bound."""

    port: int


@dataclass(frozen=True)
class ModelServed:
    """The front end routes calls to model `name` (it has its card): the ModelAdded is done."""

    name: str


@dataclass(frozen=True)
class ModelGone:
    """The front end routes no new call to model `name`: the ModelRemoved is done."""

    name: str


@dataclass(frozen=True)
class AdminLoad:
    """An Admin LoadModel that reached this front end, for the registry."""

    ask_id: int
    name: str
    path: str
    options: dict[str, Any]


@dataclass(frozen=True)
class AdminUnload:
    """An Admin UnloadModel that reached this front end, for the registry."""

    ask_id: int
    name: str
    grace_s: float | None


ToEngine = (
    Submit | Cancel | AskStatus | Listening | ModelServed | ModelGone | AdminLoad | AdminUnload
)


# Engine -> front end. Answers carry the items of their model waiting for a worker, for
# admission.


@dataclass(frozen=True)
class Answered:
    """A request's outputs, as the engine gathered them."""

    request_id: int
    # Large arrays left in shared memory (SharedArray) on the way.
    outputs: Outputs
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
    """Model `model`'s live workers, sent when they change: front ends mirror it in health."""

    model: str
    alive: int
    ready: WorkerReady | None
    waiting: int


@dataclass(frozen=True)
class ModelAdded:
    """Serve this model (the registry waits for every front end's ModelServed)."""

    settings: Settings
    state: EngineState


@dataclass(frozen=True)
class Welcome:
    """The first message to a front end: every model served now, and who shares devices.
    It listens once it serves them all."""

    models: tuple[ModelAdded, ...]
    tables: dict[str, dict[int, tuple[str, ...]]]
    # Models being loaded, to be added: calls to them are UNAVAILABLE meanwhile.
    loading: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRemoved:
    """Route no new call to model `name`; answer ModelGone."""

    name: str


@dataclass(frozen=True)
class SharedDevices:
    """Model -> worker id -> workers of other models on its device (ModelInfo's shared_with)."""

    tables: dict[str, dict[int, tuple[str, ...]]]


@dataclass(frozen=True)
class FrontendsListening:
    """Whether every front end of the server listens: overall health is SERVING only then."""

    every: bool


@dataclass(frozen=True)
class StatusReply:
    ask_id: int
    workers: tuple[WorkerStatus, ...]
    waiting: int


@dataclass(frozen=True)
class AdminReply:
    """The registry's answer to an AdminLoad or AdminUnload: its error, or calls cut."""

    ask_id: int
    error: Exception | None
    calls_cut: int = 0


@dataclass(frozen=True)
class Drain:
    """Stop taking calls, finish those in flight within the grace period, then exit."""


FromEngine = (
    Answered
    | Refused
    | EngineState
    | Welcome
    | ModelAdded
    | ModelRemoved
    | SharedDevices
    | FrontendsListening
    | StatusReply
    | AdminReply
    | Drain
)
