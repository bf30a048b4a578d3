"""Step 2 of the pipeline: token ids -> named model outputs, with torch.

Pure: knows nothing of gRPC or processes. Imported only inside worker processes, after
CUDA_VISIBLE_DEVICES is set, because importing torch is what fixes the visible GPUs.
"""

import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from pipeserve.server.pipeline.embeddings import parse_pooled
from pipeserve.server.pipeline.pooling import pool
from pipeserve.server.settings import DType, Quantize, Task

_AUTO_CLASS = {
    Task.FEATURE_EXTRACTION: AutoModel,
    Task.TEXT_CLASSIFICATION: AutoModelForSequenceClassification,
    Task.TOKEN_CLASSIFICATION: AutoModelForTokenClassification,
    Task.QUESTION_ANSWERING: AutoModelForQuestionAnswering,
    Task.FILL_MASK: AutoModelForMaskedLM,
}
_TORCH_DTYPE = {
    DType.FLOAT32: torch.float32,
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT16: torch.float16,
}
log = logging.getLogger("pipeserve.forward")

# Outputs of the encoder under a head; returned when asked for, next to the head's own.
_ENCODER_OUTPUTS = ("last_hidden_state", "pooler_output")
# ModelOutput fields that are tuples of tensors, not tensors.
_TUPLE_OUTPUTS = ("hidden_states", "attentions", "past_key_values")


class MissingWeights(ValueError):
    """The checkpoint lacks weights of the model it is loaded as (a head it was not trained
    with, say); serving them would serve random outputs."""


def _check_missing_weights(
    model: PreTrainedModel, task: Task, missing: Iterable[str], allow: bool
) -> None:
    names = sorted(missing)
    if not names:
        return
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    what = f"{type(model).__name__} (--task {task}) needs weights the checkpoint lacks: {shown}"
    if not allow:
        raise MissingWeights(
            f"{what}. Load the checkpoint's own head with --task auto, or pass "
            "--allow-missing-weights to serve them randomly initialised"
        )
    log.warning("%s; serving them randomly initialised (--allow-missing-weights)", what)


def _quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 quantisation of the linear layers (weights int8, activations per batch)."""
    from torch.ao.quantization import quantize_dynamic

    # torch.ao's eager API is deprecated in favour of torchao, which is not a dependency;
    # it still works in torch 2.x, so its warning is not the operator's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class ModelRunner:
    def __init__(self, model: PreTrainedModel, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._encoder_output: dict[str, torch.Tensor] = {}
        if model.base_model is not model:
            model.base_model.register_forward_hook(self._keep_encoder_output)
        self.outputs, self.token_level, self.default_outputs = self._probe()

    @classmethod
    def load(
        cls,
        model: str,
        revision: str | None,
        task: Task,
        dtype: DType,
        quantize: Quantize,
        device: str,
        allow_missing_weights: bool = False,
    ) -> "ModelRunner":
        """Loads the checkpoint as `task` asks; raises MissingWeights if it lacks some of the
        weights that model needs, unless `allow_missing_weights` (they are then random)."""
        # transformers only warns about missing weights (its load report) and initialises them
        # at random, which would serve random outputs as if they were the model's.
        loaded, info = _AUTO_CLASS[task].from_pretrained(
            model, revision=revision, dtype=_TORCH_DTYPE[dtype], output_loading_info=True
        )
        _check_missing_weights(loaded, task, info["missing_keys"], allow_missing_weights)
        torch_device = torch.device(device)
        loaded = loaded.to(torch_device).eval()
        if quantize is Quantize.INT8:
            loaded = _quantize_int8(loaded)
        return cls(loaded, torch_device)

    def _keep_encoder_output(self, _module, _args, output) -> None:
        if not hasattr(output, "get"):  # a plain tuple carries no names to return
            return
        self._encoder_output = {
            name: output[name] for name in _ENCODER_OUTPUTS if output.get(name) is not None
        }

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type != "cuda":
            return tensor  # the worker's own view of the ids: no copy
        # Through pinned memory the copy to the GPU is asynchronous, queued before the forward.
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None,
    ) -> dict[str, torch.Tensor]:
        kwargs = {
            "input_ids": self._to_device(input_ids),
            "attention_mask": self._to_device(attention_mask),
        }
        if token_type_ids is not None:
            kwargs["token_type_ids"] = self._to_device(token_type_ids)
        self._encoder_output = {}
        with torch.inference_mode():
            result = self.model(**kwargs, return_dict=True)
        found = {
            k: v
            for k, v in result.items()
            if k not in _TUPLE_OUTPUTS and isinstance(v, torch.Tensor)
        }
        return {**self._encoder_output, **found}

    def _probe(self) -> tuple[tuple[str, ...], frozenset[str], tuple[str, ...]]:
        """Output names; which have a token axis (dim 1 follows the length); the defaults:
        the head's own outputs, or last_hidden_state for a bare encoder."""
        shapes = []
        for length in (3, 5):
            ids = np.zeros((1, length), dtype=np.int64)
            result = self._run(ids, np.ones_like(ids), None)
            shapes.append({k: tuple(v.shape) for k, v in result.items()})
        names = tuple(shapes[0])
        token_level = frozenset(
            n for n in names if len(shapes[0][n]) > 1 and shapes[0][n][1] != shapes[1][n][1]
        )
        if self.model.base_model is self.model:
            defaults = ("last_hidden_state",)
        else:
            defaults = tuple(n for n in names if n not in _ENCODER_OUTPUTS)
        return names, token_level, defaults

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None,
        outputs: Sequence[str],
    ) -> dict[str, np.ndarray]:
        """Runs one batch; returns the named outputs as float32 numpy arrays. A
        `pooled_output` name (embeddings.py) returns last_hidden_state pooled as it says."""
        result = self._run(input_ids, attention_mask, token_type_ids)
        arrays = {}
        for name in outputs:
            pooled = parse_pooled(name)
            tensor = (
                result[name]
                if pooled is None
                else pool(result["last_hidden_state"], torch.from_numpy(attention_mask), *pooled)
            )
            arrays[name] = tensor.float().cpu().numpy()
        return arrays
