"""Converts a checkpoint for the openvino backend: torch model -> OpenVINO IR in a folder,
quantised as asked, with a manifest of what it is.

Runs once per checkpoint and precision, in a process of its own (workers/conversion.py), so
that torch's memory is freed when it exits and the workers load only the IR. The model is
converted as the torch backend runs it (NamedOutputs), so both serve the same output names;
its batch and sequence axes stay dynamic.
"""

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import openvino as ov
import torch

from pipeserve.server.backends.openvino_runner import MANIFEST_FILE, MODEL_FILE
from pipeserve.server.backends.torch_runner import NamedOutputs, load_model
from pipeserve.server.settings import DType, Quantize, Task
from pipeserve.server.terms import Terms

log = logging.getLogger("pipeserve.openvino")

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _calibration_items(model: str, revision: str | None, texts: list[str], inputs: list[str]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
    for text in texts:
        encoded = tokenizer(text, truncation=True, return_tensors="np")
        yield {name: encoded[name].astype(np.int64) for name in inputs if name in encoded}


def _quantize(
    converted: ov.Model,
    quantize: Quantize,
    calibration: list[str],
    model: str,
    revision: str | None,
    inputs: list[str],
) -> ov.Model:
    if quantize is Quantize.NONE:
        return converted
    import nncf

    if quantize is Quantize.INT8:
        # Weights to int8 (asymmetric, per output channel); activations stay float.
        return nncf.compress_weights(converted, mode=nncf.CompressWeightsMode.INT8_ASYM)
    items = list(_calibration_items(model, revision, calibration, inputs))
    return nncf.quantize(
        converted,
        nncf.Dataset(items),
        model_type=nncf.ModelType.TRANSFORMER,
        # Asymmetric activations (softmax, GELU outputs are one-sided): fewer flipped labels.
        preset=nncf.QuantizationPreset.MIXED,
        # Without SmoothQuant on the matrix products: on the SST-2 MiniLM classifier of
        # bench/sst2_classifier.py it flips 17 of 300 dev labels against 32 with it.
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1)
        ),
        subset_size=len(items),
    )


def export(
    model: str,
    revision: str | None,
    task: Task,
    quantize: Quantize,
    calibration: list[str],
    allow_missing_weights: bool,
    terms: Terms,
    folder: Path,
) -> None:
    """Writes the IR (model.xml/.bin) and manifest.json of `model` into `folder`."""
    loaded = load_model(model, revision, task, DType.FLOAT32, allow_missing_weights, terms)
    takes = inspect.signature(loaded.forward).parameters
    inputs = [name for name in _INPUTS if name in takes]
    named = NamedOutputs(loaded).eval()
    # Two rows of different lengths' worth of ids; the traced graph keeps both axes dynamic.
    example = {name: torch.ones((2, 8), dtype=torch.long) for name in inputs}
    example["input_ids"][:, 0] = 101
    example["attention_mask"][1, 5:] = 0
    if "token_type_ids" in example:
        example["token_type_ids"].zero_()
    with torch.inference_mode():
        names = list(named(**example))
    shapes = [(name, ov.PartialShape([-1, -1]), ov.Type.i64) for name in inputs]
    converted = ov.convert_model(named, example_input=example, input=shapes)
    for port, name in zip(converted.outputs, names, strict=True):
        port.get_tensor().set_names({name})
    converted = _quantize(converted, quantize, calibration, model, revision, inputs)
    # compress_to_fp16 would round float32 weights to float16: float32 must stay exact.
    ov.save_model(converted, folder / MODEL_FILE, compress_to_fp16=False)
    manifest = {"model_class": type(loaded).__name__, "inputs": inputs, "outputs": names}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
