"""Reduced precision per server: bfloat16 and int8 stay close to float32; float16 needs a GPU."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeserve.client import Client

from .conftest import launch_server, sst2_sentences


@pytest.fixture(scope="module")
def float32_logits(tiny_distilbert):
    sentences = sst2_sentences(32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    return sentences, logits.numpy()


@pytest.mark.parametrize(
    ("flags", "reported", "atol"),
    [(("--dtype", "bfloat16"), "bfloat16", 2e-2), (("--quantize", "int8"), "float32+int8", 2e-2)],
)
def test_reduced_precision_stays_close_to_float32(
    tiny_distilbert, float32_logits, flags, reported, atol
):
    sentences, expected = float32_logits
    server = launch_server(tiny_distilbert, *flags)
    try:
        with Client(server.address, timeout=60) as client:
            assert client.model_info().dtype == reported
            logits = client.forward(sentences, outputs=["logits"]).logits
    finally:
        server.stop()
    difference = np.abs(logits - expected).max()
    assert difference < atol
    assert difference > 0  # really computed at another precision
    print(f"\n{reported}: max |logit difference| vs float32 {difference:.2e}")


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
