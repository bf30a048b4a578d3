"""What the client's calls return: plain dataclasses and numpy arrays, no protobuf."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from pipeserve.client.errors import PipeserveError

_T = TypeVar("_T")


@dataclass(frozen=True)
class Encoding:
    """The tokenization of one input, as Tokenize returns it.

    Fields the request did not ask for are empty lists. Pass an Encoding back to forward() or
    classify() to skip tokenizing again; its padding is removed using `attention_mask`.
    """

    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields that were returned."""
        full: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
            "tokens": self.tokens,
            "offsets": [list(span) for span in self.offsets],
        }
        return {name: value for name, value in full.items() if value or name == "input_ids"}


@dataclass(frozen=True)
class LabelScore:
    """One label of a classification, with its score and its class index in the logits."""

    label: str
    score: float
    index: int

    def __str__(self) -> str:
        return f"{self.label}: {self.score:.4f}"

    def to_dict(self) -> dict[str, Any]:
        """The transformers text-classification pipeline's {"label": ..., "score": ...}, plus
        the class index, which stays meaningful when labels repeat or are unnamed (LABEL_0)."""
        return {"label": self.label, "score": self.score, "index": self.index}


class Windowed(list[_T], Generic[_T]):
    """One input's results (a plain list: of LabelScore from classify(), of Entity from
    classify_tokens()), and `windows`: how many windows of a long text they come from (1 for
    a text that fits, or without `stride`)."""

    windows: int

    def __init__(self, results: Iterable[_T] = (), windows: int = 1) -> None:
        super().__init__(results)
        self.windows = windows


class ForwardOutput(dict[str, np.ndarray]):
    """Named model outputs, in the order asked for, like transformers' ModelOutput.

    Read an output by attribute (`out.logits`), by name (`out["logits"]`) or by position
    (`out[0]`). Per-token outputs are padded to the longest input; `sequence_lengths` gives each
    input's real number of tokens.
    """

    sequence_lengths: np.ndarray

    def __init__(self, outputs: Iterable[tuple[str, np.ndarray]], sequence_lengths: np.ndarray):
        super().__init__(outputs)
        self.sequence_lengths = sequence_lengths

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached for names that are not real attributes; dunder lookups (pickle, copy)
        # must see AttributeError rather than a KeyError.
        if not name.startswith("__"):
            try:
                return super().__getitem__(name)
            except KeyError:
                pass
        raise AttributeError(f"{type(self).__name__} has no output {name!r}")

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *self.keys()]

    def __repr__(self) -> str:
        # Full arrays (hidden states) would flood the screen; shapes tell what came back.
        shown = ", ".join(f"{name}=<{a.dtype} {list(a.shape)}>" for name, a in self.items())
        return f"ForwardOutput({shown}, sequence_lengths={self.sequence_lengths.tolist()})"

    def to_tuple(self) -> tuple[np.ndarray, ...]:
        """The outputs in order, as ModelOutput.to_tuple()."""
        return tuple(self.values())


@dataclass(frozen=True)
class WorkerInfo:
    """A server worker process and the device it is pinned to."""

    id: int
    device: str
    pid: int
    ready: bool
    batches: int = 0
    items: int = 0
    restarts: int = 0
    busy: bool = False
    # Workers of other served models on the same device, as "MODEL/ID".
    shared_with: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EmbeddingInfo:
    """How embed() pools and normalises (ModelInfoResponse.embedding): the checkpoint's
    sentence-transformers modules, or mean pooling ("default") without a modules.json."""

    pooling: str
    source: str
    include_prompt: bool
    normalized: bool
    dimension: int
    max_seq_length: int
    prompts: list[str] = field(default_factory=list)
    default_prompt_name: str = ""
    # The checkpoint's own truncate_dim (0: none), applied when a call gives none.
    truncate_dim: int = 0


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model, the server's limits and its workers (ModelInfoResponse)."""

    model: str
    task: str
    architecture: str
    labels: list[str]
    max_length: int
    hidden_size: int
    vocab_size: int
    outputs: list[str]
    dtype: str
    max_items_per_request: int
    workers: list[WorkerInfo]
    max_tokens_per_request: int = 0
    frontend_pid: int = 0
    frontends: int = 0
    queued_items: int = 0
    served_rpcs: list[str] = field(default_factory=list)
    mask_token: str = ""
    # Set for a bare encoder, which embed() serves.
    embedding: EmbeddingInfo | None = None
    # The name requests choose this model by (`model` is its path or hub id).
    name: str = ""
    # What runs the model, with its version: "torch 2.13.0", "openvino 2026.4.1".
    backend: str = ""


@dataclass(frozen=True)
class ServedModel:
    """One model the server serves (ListModelsResponse)."""

    name: str
    model: str
    task: str
    serving: bool
    default: bool


@dataclass(frozen=True)
class StreamResult:
    """The answer to one classify_stream request: `results` on success, else `error`."""

    id: str
    results: list[Windowed[LabelScore]] | None = None
    error: PipeserveError | None = None
