"""Settings as an operator gives them, in process: flags override the environment, which
overrides the defaults, and the default backend on a CPU is OpenVINO unless only torch serves
the settings, kept only where measured faster than torch, and measured once. The server's
start-up: tests/e2e/test_startup.py; auto's measurement on a real server: e2e/test_openvino.py."""

import json
import logging

import numpy as np
import pytest

from pipeserve.server.backends.runner import ModelRunner
from pipeserve.server.backends.select import resolve_backend
from pipeserve.server.backends.speed import faster, measure
from pipeserve.server.model.loading import auto_choice
from pipeserve.server.schema import DeviceSpec, WorkerSpec
from pipeserve.server.settings import Backend, DType, Quantize, Settings, Task, parse_settings


def test_flags_override_environment_which_overrides_defaults(monkeypatch):
    monkeypatch.setenv("PIPESERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("PIPESERVE_PORT", "6000")
    settings = parse_settings(["--port", "7000"])
    assert settings.max_batch_size == 7
    assert settings.port == 7000
    assert settings.host == "127.0.0.1"  # never all interfaces unless asked


@pytest.mark.parametrize(
    ("given", "on_gpu", "backend"),
    [
        ({}, False, Backend.OPENVINO),
        ({}, True, Backend.TORCH),
        ({"quantize": "int8"}, False, Backend.OPENVINO),  # nncf is in the test extra
        ({"dtype": "bfloat16"}, False, Backend.TORCH),  # openvino's needs bfloat16 units
        ({"torch_compile": True}, False, Backend.TORCH),
        ({"backend": "torch"}, False, Backend.TORCH),
    ],
)
def test_the_default_backend_is_openvino_on_cpus_unless_only_torch_serves_the_settings(
    monkeypatch, tiny_bert, given, on_gpu, backend
):
    pytest.importorskip("openvino")
    monkeypatch.delenv("PIPESERVE_BACKEND", raising=False)  # conftest's pin for other servers
    settings = Settings(model=(str(tiny_bert),), **given)
    assert resolve_backend(settings, on_gpu=on_gpu) is backend


class _Busy(ModelRunner):
    """A stand-in model whose forward costs `work` times a fixed CPU workload per token."""

    def __init__(self, work: int) -> None:
        self.work = work
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, input_ids, attention_mask, token_type_ids, outputs):
        self.shapes.append(input_ids.shape)
        values = np.arange(input_ids.size * 200, dtype=np.float64)
        for _ in range(self.work):
            values = np.sqrt(values + 1.0)
        return {"logits": values[:1]}


def test_the_measurement_times_each_backend_on_the_same_batches_and_finds_the_faster():
    slow, fast = _Busy(work=8), _Busy(work=1)
    spent = measure({Backend.TORCH: slow, Backend.OPENVINO: fast}, vocab_size=100)
    assert slow.shapes == fast.shapes and len(set(slow.shapes)) > 1
    assert spent["torch"] > spent["openvino"] > 0
    assert faster(spent) is Backend.OPENVINO
    spent = measure({Backend.TORCH: fast, Backend.OPENVINO: slow}, vocab_size=100)
    assert faster(spent) is Backend.TORCH


@pytest.mark.parametrize(
    ("spent", "backend"),
    [
        ({"torch": 2.0, "openvino": 1.0}, Backend.OPENVINO),
        ({"torch": 1.0, "openvino": 2.0}, Backend.TORCH),
        ({"torch": 1.0, "openvino": 1.0}, Backend.OPENVINO),  # a tie: workers without torch
    ],
)
def test_auto_serves_what_a_former_measurement_found_faster_without_measuring_again(
    tmp_path, caplog, spent, backend
):
    # The record of a measurement on two cores, beside the converted model. Measuring again
    # would fail (there is no checkpoint) and keep openvino: torch can only come from it.
    (tmp_path / "speed-2-cores.json").write_text(json.dumps(spent))
    spec = WorkerSpec(
        worker_id=0,
        model=str(tmp_path / "no-checkpoint"),
        revision=None,
        task=Task.TEXT_CLASSIFICATION,
        dtype=DType.FLOAT32,
        quantize=Quantize.NONE,
        device=DeviceSpec(cpus=(0, 1)),
        backend=Backend.OPENVINO,
        converted=str(tmp_path),
    )
    with caplog.at_level(logging.INFO, logger="pipeserve"):
        assert auto_choice(spec, vocab_size=100) is backend
    assert "measuring" not in caplog.text and f"serving {backend}" in caplog.text
