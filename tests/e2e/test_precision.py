"""Reduced precision per server. The served bfloat16 and int8 outputs equal what the same
precision gives in-process (so the server really runs at that precision, and right), and stay
as close to float32 as that precision allows; float16 needs a GPU."""

import subprocess
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeserve.client import Client
from tests.helpers import sst2_sentences
from tests.servers import launch_server

OUTPUTS = ("logits", "last_hidden_state")
# Served against in-process at the same precision, item by item: the same kernels on the same
# shapes, so at most float32 noise is left (measured: exactly 0 for both precisions).
SAME_PRECISION_ATOL = 1e-5


@dataclass(frozen=True)
class Precision:
    flags: tuple[str, ...]
    reported: str  # ModelInfo.dtype
    # What the precision loses against float32 on the tiny model, per output, about twice the
    # largest error measured in-process over these 32 sentences (bfloat16: logits 0.127,
    # hidden states 0.105; int8: 0.354 and 0.454). Zeroed logits would miss by about 2.
    max_error: dict[str, float]


PRECISIONS = {
    "bfloat16": Precision(
        ("--dtype", "bfloat16"), "bfloat16", {"logits": 0.25, "last_hidden_state": 0.2}
    ),
    "int8": Precision(
        ("--quantize", "int8"), "float32+int8", {"logits": 0.7, "last_hidden_state": 0.9}
    ),
}


def _load(path, precision: str | None):
    """The checkpoint in-process at `precision`, built as torch documents it (not with the
    server's code): bfloat16 weights, or dynamic int8 quantisation of the linear layers."""
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).eval()
    if precision != "int8":
        return model
    from torch.ao.quantization import quantize_dynamic

    # torch.ao's eager quantisation warns that it is deprecated; it is still what torch 2.x runs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _outputs(model, tokenizer, sentences: list[str]) -> dict[str, list[np.ndarray]]:
    """Each sentence alone: logits and last hidden state, as float32."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUTS}
    with torch.inference_mode():
        for sentence in sentences:
            out = model(**tokenizer(sentence, return_tensors="pt"), output_hidden_states=True)
            rows["logits"].append(out.logits[0].float().numpy())
            rows["last_hidden_state"].append(out.hidden_states[-1][0].float().numpy())
    return rows


def _served(out) -> dict[str, list[np.ndarray]]:
    """A ForwardOutput as per-sentence arrays, padding cut off."""
    lengths = out.sequence_lengths.tolist()
    return {
        "logits": list(out.logits),
        "last_hidden_state": [out.last_hidden_state[i, :n] for i, n in enumerate(lengths)],
    }


def _max_error(got: dict[str, list[np.ndarray]], want: dict[str, list[np.ndarray]], name: str):
    return max(float(np.abs(a - b).max()) for a, b in zip(got[name], want[name], strict=True))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sst2_sentences(32)


@pytest.fixture(scope="module")
def tokenizer(tiny_distilbert):
    return AutoTokenizer.from_pretrained(tiny_distilbert)


@pytest.fixture(scope="module")
def float32(tiny_distilbert, tokenizer, sentences) -> dict[str, list[np.ndarray]]:
    return _outputs(_load(tiny_distilbert, None), tokenizer, sentences)


@pytest.mark.slow  # a server per precision
@pytest.mark.parametrize("name", list(PRECISIONS))
def test_reduced_precision_is_that_precision_and_close_to_float32(
    tiny_distilbert, tokenizer, sentences, float32, name
):
    precision = PRECISIONS[name]
    expected = _outputs(_load(tiny_distilbert, name), tokenizer, sentences)
    # One item per batch, as in-process: int8 quantises activations per batch, and bfloat16
    # rounds differently on other shapes, so a batch of several would not be comparable.
    server = launch_server(tiny_distilbert, *precision.flags, "--max-batch-size", "1")
    try:
        with Client(server.address, timeout=60) as client:
            assert client.model_info().dtype == precision.reported
            served = _served(client.forward(sentences, outputs=list(OUTPUTS)))
    finally:
        server.stop()
    for output in OUTPUTS:
        same = _max_error(served, expected, output)
        lost = _max_error(served, float32, output)
        print(f"\n{name} {output}: max |diff| vs in-process {same:.2e}, vs float32 {lost:.2e}")
        assert same <= SAME_PRECISION_ATOL, output
        assert 0 < lost <= precision.max_error[output], output  # really another precision
    labels = np.argmax(served["logits"], axis=1)
    assert (labels == np.argmax(float32["logits"], axis=1)).mean() >= 0.85


def test_float16_on_cpu_is_refused_with_one_line(tiny_distilbert):
    result = subprocess.run(
        [sys.executable, "-m", "pipeserve.server", "--model", str(tiny_distilbert),
         "--devices", "cpu", "--dtype", "float16", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "pipeserve serve: error: --dtype float16 needs a GPU; on CPU use bfloat16 or float32"
    )
