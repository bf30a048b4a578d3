"""The GPU path: skipped without a CUDA GPU (never needed by CI)."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeserve.client import Client

from .conftest import SEED_SENTENCES, launch_server

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _serve_on_gpu(model, *flags):
    return launch_server(model, *flags, devices="0")


def test_worker_is_pinned_to_the_gpu_and_matches_in_process(tiny_distilbert):
    server = _serve_on_gpu(tiny_distilbert)
    try:
        with Client(server.address, timeout=60) as client:
            assert [w.device for w in client.model_info().workers] == ["cuda:0"]
            logits = client.forward(SEED_SENTENCES, outputs=["logits"]).logits
    finally:
        server.stop()
    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    with torch.inference_mode():
        expected = [
            model(**tokenizer(s, return_tensors="pt")).logits[0].numpy() for s in SEED_SENTENCES
        ]
    np.testing.assert_allclose(logits, np.stack(expected), atol=1e-4)


def test_float16_on_gpu(tiny_distilbert):
    server = _serve_on_gpu(tiny_distilbert, "--dtype", "float16")
    try:
        with Client(server.address, timeout=60) as client:
            assert client.model_info().dtype == "float16"
            assert client.classify(SEED_SENTENCES)[0][0].label in ("NEGATIVE", "POSITIVE")
    finally:
        server.stop()
