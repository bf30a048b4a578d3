"""The torch backend: the checkpoint loaded with transformers, run eagerly.

Imported only inside worker processes, the export child and the fork server of CPU workers
and front ends (`launch.py`), after CUDA_VISIBLE_DEVICES is set, because importing torch is
what fixes the visible GPUs.
"""

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch._inductor.config
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from pipeserve.server.backends import packing
from pipeserve.server.backends.runner import ENCODER_OUTPUTS, ModelRunner, random_batch
from pipeserve.server.settings import DType, Quantize, Task
from pipeserve.server.terms import FLAG_TERMS, Terms

_AUTO_CLASS = {
    Task.FEATURE_EXTRACTION: AutoModel,
    Task.TEXT_CLASSIFICATION: AutoModelForSequenceClassification,
    Task.TOKEN_CLASSIFICATION: AutoModelForTokenClassification,
    Task.FILL_MASK: AutoModelForMaskedLM,
}
_TORCH_DTYPE = {
    DType.FLOAT32: torch.float32,
    DType.BFLOAT16: torch.bfloat16,
    DType.FLOAT16: torch.float16,
}
log = logging.getLogger("pipeserve.forward")

# ModelOutput fields that are tuples of tensors, not tensors.
_TUPLE_OUTPUTS = ("hidden_states", "attentions", "past_key_values")

# --torch-compile: (rows, tokens) compiled at start-up (a dimension of 1 is specialised, so a
# batch of one compiles on its own), those eager and compiled are measured on, and the least
# gain worth running the compiled model for.
_WARM_UP_SHAPES = ((1, 9), (4, 17), (9, 31))
_MEASURE_SHAPES = ((1, 12), (8, 24), (32, 32))
_MEASURE_ROUNDS = 3
_MIN_GAIN = 0.03


class MissingWeights(ValueError):
    """The checkpoint lacks weights of the model it is loaded as (a head it was not trained
    with, say); serving them would serve random outputs."""


def _check_missing_weights(
    model: PreTrainedModel, task: Task, missing: Iterable[str], allow: bool, terms: Terms
) -> None:
    names = sorted(missing)
    if not names:
        return
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    what = (
        f"{type(model).__name__} ({terms.setting('task', task)}) needs weights the checkpoint "
        f"lacks: {shown}"
    )
    if not allow:
        raise MissingWeights(
            f"{what}. Load the checkpoint's own head with {terms.setting('task', Task.AUTO)}, "
            f"or serve them randomly initialised with {terms.allow_missing_weights}"
        )
    log.warning("%s; serving them randomly initialised (%s)", what, terms.allow_missing_weights)


def _quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 quantisation of the linear layers (weights int8, activations per batch)."""
    from torch.ao.quantization import quantize_dynamic

    # torch.ao's eager API is deprecated in favour of torchao, which is not a dependency;
    # it still works in torch 2.x, so its warning is not the operator's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_model(
    model: str,
    revision: str | None,
    task: Task,
    dtype: DType,
    allow_missing_weights: bool,
    terms: Terms,
) -> PreTrainedModel:
    """The checkpoint as `task` asks, in eval mode on the CPU; raises MissingWeights if it lacks
    some of the weights that model needs, unless `allow_missing_weights` (they are then random).
    """
    # transformers only warns about missing weights (its load report) and initialises them
    # at random, which would serve random outputs as if they were the model's.
    loaded, info = _AUTO_CLASS[task].from_pretrained(
        model, revision=revision, dtype=_TORCH_DTYPE[dtype], output_loading_info=True
    )
    _check_missing_weights(loaded, task, info["missing_keys"], allow_missing_weights, terms)
    return loaded.eval()


class NamedOutputs(torch.nn.Module):
    """A model whose forward returns every tensor output by name: the head's, and its
    encoder's (last_hidden_state, pooler_output) caught by a hook, as a flat dict. The torch
    backend runs it; the openvino export converts it, so both give the same names."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self._encoder_output: dict[str, torch.Tensor] = {}
        if model.base_model is not model:
            model.base_model.register_forward_hook(self._keep_encoder_output)

    def _keep_encoder_output(self, _module, _args, output) -> None:
        if not hasattr(output, "get"):  # a plain tuple carries no names to return
            return
        self._encoder_output = {
            name: output[name] for name in ENCODER_OUTPUTS if output.get(name) is not None
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`position_ids` and `cu_seqlens` are a packed batch's (see packing.py)."""
        self._encoder_output = {}
        # Named explicitly (not **kwargs): tracing for the export binds its inputs by name.
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if cu_seqlens is not None:
            inputs |= {"position_ids": position_ids, "cu_seqlens": cu_seqlens}
        result = self.model(**inputs, return_dict=True)
        found = {
            k: v
            for k, v in result.items()
            if k not in _TUPLE_OUTPUTS and isinstance(v, torch.Tensor)
        }
        return {**self._encoder_output, **found}


class TorchRunner(ModelRunner):
    def __init__(self, model: PreTrainedModel, device: torch.device) -> None:
        self.model = model
        self.model_class = type(model).__name__
        self.device = device
        self._packing = (
            packing.Packing(model) if device.type == "cpu" and packing.supports(model) else None
        )
        self.packs = self._packing is not None
        self._named = NamedOutputs(model)
        self._run: torch.nn.Module = self._named
        self.probe()

    def compile(self) -> None:
        """Compiles the model with torch.compile (inductor, dynamic shapes), warmed up on the
        shapes that compile on their own (a batch of one is specialised), then measures it
        against eager, alternating, on a few batch shapes: the compiled model runs only if it
        is faster, so the flag never slows a worker down. A failed compile leaves it eager.
        Inductor caches its kernels on disk (TORCHINDUCTOR_CACHE_DIR), so a restart compiles
        faster."""
        started = time.perf_counter()
        vocab = self.model.config.vocab_size
        try:
            compiled = torch.compile(self._named, dynamic=True)
            for shape in _WARM_UP_SHAPES:
                self._call(compiled, *random_batch(shape, vocab))
        except Exception as exc:  # an inductor or toolchain failure must not stop serving
            log.warning("torch.compile failed, running eager: %s: %s", type(exc).__name__, exc)
            return
        compile_s = time.perf_counter() - started
        spent = {"eager": 0.0, "compiled": 0.0}
        runs: dict[str, Callable[[np.ndarray, np.ndarray], object]] = {
            "eager": lambda ids, mask: self.forward(ids, mask, None, None),  # packed, if it packs
            "compiled": lambda ids, mask: self._call(compiled, ids, mask),
        }
        for _ in range(_MEASURE_ROUNDS):
            for shape in _MEASURE_SHAPES:
                batch = random_batch(shape, vocab)
                for name, run in runs.items():
                    start = self._clock()
                    run(*batch)
                    spent[name] += self._clock() - start
        ratio = spent["compiled"] / spent["eager"]
        faster = ratio < 1 - _MIN_GAIN
        log.info(
            "torch.compile: compiled in %.1f s; %.2fx eager's time on %s: running %s",
            compile_s,
            ratio,
            "CPU" if self.device.type == "cpu" else self.device.type,
            "compiled" if faster else "eager",
        )
        if faster:
            self._run = compiled
            # A packed stream's row-by-row attention would recompile for every row count.
            self.packs = False

    def _clock(self) -> float:
        """CPU time on a CPU (a shared host's wall time is other jobs' too); wall time once
        the GPU is done on a GPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def _call(self, module: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> None:
        with torch.inference_mode():
            module(self._to_device(ids), self._to_device(mask))

    @classmethod
    def load(
        cls,
        model: str,
        revision: str | None,
        task: Task,
        dtype: DType,
        quantize: Quantize,
        device: str,
        threads: int,
        allow_missing_weights: bool = False,
        terms: Terms = FLAG_TERMS,
    ) -> "TorchRunner":
        torch_device = torch.device(device)
        if torch_device.type == "cpu":
            torch.set_num_threads(threads)
            # Inductor counted its compile threads when it was imported, in a worker forked
            # from the fork server before the worker was pinned: all the host's cores.
            torch._inductor.config.compile_threads = threads
        loaded = load_model(model, revision, task, dtype, allow_missing_weights, terms)
        loaded = loaded.to(torch_device)
        if quantize is Quantize.INT8:
            loaded = _quantize_int8(loaded)
        return cls(loaded, torch_device)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type != "cuda":
            return tensor  # the worker's own view of the ids: no copy
        # Through pinned memory the copy to the GPU is asynchronous, queued before the forward.
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None,
        outputs: Sequence[str] | None,
    ) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            if self.packs and len(attention_mask) > 1 and not attention_mask.all():
                assert self._packing is not None
                result = self._packing.run(self._named, input_ids, attention_mask, token_type_ids)
            else:
                kwargs = {
                    "input_ids": self._to_device(input_ids),
                    "attention_mask": self._to_device(attention_mask),
                }
                if token_type_ids is not None:
                    kwargs["token_type_ids"] = self._to_device(token_type_ids)
                result = self._run(**kwargs)
        names = result if outputs is None else outputs
        return {name: result[name].float().cpu().numpy() for name in names}
