"""The GPU path: skipped without a CUDA GPU (never needed by CI)."""

import shutil
import subprocess

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from pipeserve.client import Client
from tests.helpers import SEED_SENTENCES, in_process
from tests.servers import launch_server

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
    (expected,) = in_process(
        tiny_distilbert, AutoModelForSequenceClassification, SEED_SENTENCES, "logits"
    )
    np.testing.assert_allclose(logits, np.stack(expected), atol=1e-4)


def test_float16_on_gpu(tiny_distilbert):
    server = _serve_on_gpu(tiny_distilbert, "--dtype", "float16")
    try:
        with Client(server.address, timeout=60) as client:
            assert client.model_info().dtype == "float16"
            assert client.classify(SEED_SENTENCES)[0][0].label in ("NEGATIVE", "POSITIVE")
    finally:
        server.stop()


def test_each_worker_holds_a_context_on_its_own_gpu_only(tiny_distilbert):
    """With every GPU in use, nvidia-smi shows each worker process on exactly one GPU, a
    different one each: CUDA_VISIBLE_DEVICES was set before the worker loaded torch."""
    if shutil.which("nvidia-smi") is None:
        pytest.skip("needs nvidia-smi")
    server = launch_server(tiny_distilbert, devices="auto")
    try:
        with Client(server.address, timeout=60) as client:
            client.classify(SEED_SENTENCES)  # every worker has run, so holds a context
            pids = {w.pid for w in client.model_info().workers}
            apps = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
    finally:
        server.stop()
    gpus_of: dict[int, set[str]] = {}
    for line in apps.splitlines():
        pid, uuid = (part.strip() for part in line.split(","))
        if int(pid) in pids:
            gpus_of.setdefault(int(pid), set()).add(uuid)
    assert set(gpus_of) == pids
    assert all(len(gpus) == 1 for gpus in gpus_of.values())
    assert len({next(iter(g)) for g in gpus_of.values()}) == len(pids) == torch.cuda.device_count()
