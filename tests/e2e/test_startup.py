"""Start-up as an operator sees it: --help documents every setting; what cannot start fails at
once with one line (a missing folder, a folder with no checkpoint, an unreachable hub, a head
the checkpoint lacks, unloadable weights, invalid settings); a missing head asked for is
served and said so. Settings and the default backend, in process: tests/unit/test_startup.py."""

import importlib.util
import os
import subprocess
import sys
import time

import pytest

from pipeserve.client import Client
from pipeserve.server.settings import Settings
from tests.helpers import require
from tests.servers import free_port, launch_server

# What a user would call "at once" on a loaded 2-core machine; the failures measure 2-4 s here,
# and took 7 s (a mistyped folder) and 26 s (an unreachable hub) before they were checked early.
STARTUP_FAILURE_S = 15


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeserve.server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_help_documents_every_setting():
    result = _serve("--help")
    assert result.returncode == 0
    for name in Settings.model_fields:
        flag = "--" + name.replace("_", "-")
        assert flag in result.stdout, f"{flag} missing from --help"
        assert "PIPESERVE_" + name.upper() in result.stdout


def _timed_serve(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipeserve.server", "--port", "0", "--devices", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return result, time.monotonic() - start


def _only_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed start-up printed: nothing loaded, no worker started before it."""
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


@pytest.mark.parametrize("given", ["absolute", "./typo/model", "~/no-such-pipeserve-model"])
def test_a_missing_model_folder_fails_at_once_with_one_line(tmp_path, given):
    model = str(tmp_path / "no-such-model") if given == "absolute" else given
    result, seconds = _timed_serve("--model", model, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    line = _only_line(result)
    assert line.startswith(f"pipeserve serve: error: cannot load model '{model}': no such folder")
    assert "hub id such as distilbert/distilbert-base-uncased-finetuned-sst-2-english" in line
    assert seconds < STARTUP_FAILURE_S


def test_a_folder_without_config_is_no_checkpoint(tmp_path):
    result, seconds = _timed_serve("--model", str(tmp_path), env=dict(os.environ))

    line = _only_line(result)
    assert line.endswith(f"the folder {tmp_path} has no config.json, so it is not a checkpoint "
                         "(transformers' save_pretrained writes one)")  # fmt: skip
    assert seconds < STARTUP_FAILURE_S


@pytest.mark.parametrize("endpoint", ["closed local port", "the real hub"])
def test_an_unreachable_hub_fails_at_once_with_one_line(endpoint):
    """What a new user without hub access sees: the real hub client, no offline mode."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    if endpoint == "closed local port":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result, seconds = _timed_serve("--model", "pipeserve-tests/no-such-model", env=env)

    if endpoint == "the real hub" and "out of reach" not in result.stderr:
        pytest.skip("the hub is reachable from here")
    line = _only_line(result)
    assert line.startswith(
        "pipeserve serve: error: cannot load model 'pipeserve-tests/no-such-model': "
        "the Hugging Face hub ("
    )
    assert "Serve a local checkpoint folder with --model PATH, or set HF_HUB_OFFLINE=1" in line
    assert seconds < STARTUP_FAILURE_S


@pytest.mark.slow  # a start that loads the model (torch) or converts it (openvino)
@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_a_head_the_checkpoint_lacks_is_refused(tiny_bert, tmp_path, backend):
    if backend == "openvino":
        require(importlib.util.find_spec("openvino") is not None, "openvino not installed")
    result = _serve("--model", str(tiny_bert), "--task", "text-classification",
                    "--backend", backend, "--cache-dir", str(tmp_path),
                    "--port", "0", "--devices", "cpu")  # fmt: skip

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    # The openvino backend meets the missing head while converting the model.
    failed = "cannot load model" if backend == "torch" else "cannot convert model"
    assert last.startswith(f"pipeserve serve: error: {failed} '{tiny_bert}'")
    assert (
        "BertForSequenceClassification (--task text-classification) needs weights the "
        "checkpoint lacks: classifier.bias, classifier.weight" in last
    )
    assert "--allow-missing-weights" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_missing_head_is_served_when_asked_and_said_so(tiny_bert):
    server = launch_server(tiny_bert, "--task", "text-classification", "--allow-missing-weights")
    try:
        with Client(server.address, timeout=60) as client:
            assert client.model_info().architecture == "BertForSequenceClassification"
        warnings = [line for line in server.log if "serving them randomly initialised" in line]
        assert len(warnings) == 1
        assert "classifier.bias, classifier.weight" in warnings[0]
    finally:
        server.stop()


@pytest.mark.slow
def test_unloadable_weights_stop_startup_with_one_line(tmp_path, tiny_distilbert):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_distilbert.iterdir():
        if item.name != "model.safetensors":
            (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not weights")
    result = _serve("--model", str(broken), "--port", "0", "--devices", "cpu")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pipeserve serve: error: cannot load model '{broken}'")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--devices", "gpu0"), ("--max-batch-size", "0"), ("--dtype", "int3")]
)
def test_invalid_settings_are_refused(flag, value):
    result = _serve(flag, value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
