"""The image's HEALTHCHECK (python -m pipeserve.server.healthcheck) against real servers: told
nothing, it finds the port, TLS and token in the server's own settings. Its reading of command
lines: tests/unit/test_healthcheck.py."""

import json
import os
import re
import subprocess

import pytest

from tests.helpers import ROOT, venv_path
from tests.servers import free_port, launch_server


def _healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command, as the image runs it."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^\s*CMD (\[.*\])$", dockerfile.split("HEALTHCHECK", 1)[1], re.MULTILINE)
    assert match is not None, "HEALTHCHECK has no exec-form CMD"
    return json.loads(match.group(1))


def _probe(pid: int) -> subprocess.CompletedProcess:
    # The server is not process 1 here, so the probe is told which it is.
    return subprocess.run(
        [*_healthcheck_command(), "--pid", str(pid)],
        capture_output=True,
        text=True,
        timeout=60,
        # The server's environment (launch_server's), as a container's probe shares it.
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PATH": venv_path()},
    )


@pytest.mark.slow
def test_the_probe_finds_the_port_a_server_was_given(tiny_distilbert):
    server = launch_server(tiny_distilbert, "--port", str(free_port()))
    try:
        probe = _probe(server.proc.pid)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.strip() == "SERVING"
    finally:
        server.stop()
    # Stopped, it is unhealthy: the probe fails when the server is gone.
    assert _probe(server.proc.pid).returncode == 1


@pytest.mark.slow
def test_the_probe_speaks_mutual_tls_and_sends_a_token(mtls_server):
    """Its token file starts with a comment, which the probe skips; health is not open."""
    probe = _probe(mtls_server.proc.pid)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.strip() == "SERVING"


def test_a_process_that_is_no_server_is_unhealthy():
    probe = _probe(os.getpid())  # pytest's own process
    assert probe.returncode == 1
    assert "unhealthy" in probe.stderr
