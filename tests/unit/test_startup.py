"""Settings as an operator gives them, in process: flags override the environment, which
overrides the defaults, and the default backend on a CPU is OpenVINO unless only torch serves
the settings. The server's start-up: tests/e2e/test_startup.py."""

import pytest

from pipeserve.server.backends.select import resolve_backend
from pipeserve.server.settings import Backend, Settings, parse_settings


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
