"""Start-up as an operator sees it: flags, environment variables, and clear failures."""

import os
import subprocess
import sys

import pytest

from pipeserve.server.settings import Settings, parse_settings


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


def test_flags_override_environment_which_overrides_defaults(monkeypatch):
    monkeypatch.setenv("PIPESERVE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("PIPESERVE_PORT", "6000")
    settings = parse_settings(["--port", "7000"])
    assert settings.max_batch_size == 7
    assert settings.port == 7000
    assert settings.host == "127.0.0.1"  # never all interfaces unless asked


def test_missing_model_stops_startup_with_one_clear_line(tmp_path):
    missing = tmp_path / "no-such-model"
    result = _serve("--model", str(missing), "--port", "0", "--devices", "cpu")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pipeserve serve: error: cannot load model '{missing}'")
    assert "Traceback" not in result.stderr


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
