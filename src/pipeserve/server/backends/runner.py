"""Step 2 of the pipeline: token ids -> named model outputs.

One interface, `ModelRunner`, with one implementation per backend (`backends/`): torch, which
loads the checkpoint itself, and openvino, which serves a model converted ahead of time. The
rest of the server sees only this interface and `load_runner`.

Pure: knows nothing of gRPC or processes. Imports no backend at import time: a worker pins
itself to its device first (importing torch is what fixes the visible GPUs), and a worker
serving OpenVINO never imports torch at all.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeserve.server.settings import Backend, DType, Quantize, Task
from pipeserve.server.terms import FLAG_TERMS, Terms

# Outputs of the encoder under a head; returned when asked for, next to the head's own.
ENCODER_OUTPUTS = ("last_hidden_state", "pooler_output")


def random_batch(shape: tuple[int, int], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask of `shape` (rows, longest) to time a model on, as the batcher forms
    batches: the rows' lengths spread from 70% of the longest to all of it (about 15% padding,
    which a runner that packs does not compute). A model's cost does not depend on which ids
    they are."""
    rows, longest = shape
    lengths = np.linspace(longest, longest * 0.7, rows).round().astype(np.int64)
    mask = (np.arange(longest) < lengths[:, None]).astype(np.int64)
    ids = np.random.default_rng(0).integers(1, vocab_size, shape) * mask
    return ids, mask


class ModelRunner(ABC):
    """A loaded model. `outputs`: the names it returns; `token_level`: those with a token axis
    (dim 1 follows the length); `item_shapes`: each output's shape past the batch and token
    axes; `default_outputs`: what Forward returns when none is named; `model_class`: the
    transformers class it is, e.g. DistilBertForSequenceClassification; `packs`: whether it
    runs a padded batch as one stream of its rows' real tokens, so that padding costs it
    nothing (see packing.py)."""

    model_class: str
    packs: bool = False
    outputs: tuple[str, ...]
    token_level: frozenset[str]
    item_shapes: dict[str, tuple[int, ...]]
    default_outputs: tuple[str, ...]

    @abstractmethod
    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None,
        outputs: Sequence[str] | None,
    ) -> dict[str, np.ndarray]:
        """Runs one batch; returns the named outputs (None: all) as float32 numpy arrays."""

    def probe(self) -> None:
        """Finds outputs, token_level, item_shapes and default_outputs by running two
        lengths. The defaults are the head's own outputs, or last_hidden_state for a bare
        encoder."""
        shapes = []
        for length in (3, 5):
            ids = np.zeros((1, length), dtype=np.int64)
            result = self.forward(ids, np.ones_like(ids), None, None)
            shapes.append({k: v.shape for k, v in result.items()})
        self.outputs = tuple(shapes[0])
        self.token_level = frozenset(
            n for n in self.outputs if len(shapes[0][n]) > 1 and shapes[0][n][1] != shapes[1][n][1]
        )
        self.item_shapes = {
            n: tuple(shape[2:] if n in self.token_level else shape[1:])
            for n, shape in shapes[0].items()
        }
        head = tuple(n for n in self.outputs if n not in ENCODER_OUTPUTS)
        self.default_outputs = head or ("last_hidden_state",)


def load_runner(
    backend: Backend,
    *,
    model: str,
    revision: str | None,
    task: Task,
    dtype: DType,
    quantize: Quantize,
    device: str,
    threads: int,
    allow_missing_weights: bool = False,
    terms: Terms = FLAG_TERMS,
    converted: Path | None = None,
    torch_compile: bool = False,
) -> ModelRunner:
    """The model on `backend`: torch loads the checkpoint (compiled where `torch_compile` and
    faster); openvino the `converted` folder (see backends/openvino_export.py), at `dtype`, on
    `threads` cores."""
    if backend is Backend.OPENVINO:
        from pipeserve.server.backends.openvino_runner import OpenVINORunner

        assert converted is not None, "the openvino backend serves a converted model"
        return OpenVINORunner.load(converted, dtype, threads)
    from pipeserve.server.backends.torch_runner import TorchRunner

    runner = TorchRunner.load(
        model, revision, task, dtype, quantize, device, threads, allow_missing_weights, terms
    )
    if torch_compile:
        runner.compile()
    return runner
