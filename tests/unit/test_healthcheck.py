"""The image's HEALTHCHECK (python -m pipeserve.server.healthcheck), its reading of a server's
command line: the port, TLS and token from any way of launching it, a command line that is no
server's refused, and a server bound to every interface probed on loopback. Against real
servers: tests/e2e/test_healthcheck.py."""

import pytest

from pipeserve.server.healthcheck import loopback_host, server_arguments


@pytest.mark.parametrize(
    ("cmdline", "arguments"),
    [
        (["/opt/venv/bin/python", "/opt/venv/bin/pipeserve", "serve", "--port", "6000"],
         ["--port", "6000"]),
        (["/sbin/docker-init", "--", "pipeserve", "serve"], []),
        (["/usr/bin/python3", "-m", "pipeserve.server", "--host", "::"], ["--host", "::"]),
    ],
)  # fmt: skip
def test_the_server_arguments_are_read_from_any_launch(cmdline, arguments):
    assert server_arguments(cmdline) == arguments


def test_not_a_server_command_line_is_refused():
    with pytest.raises(ValueError, match="not a pipeserve server"):
        server_arguments(["/opt/venv/bin/pipeserve", "health"])


@pytest.mark.parametrize(
    ("bound", "reached"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("10.0.0.7", "10.0.0.7"), ("fd00::7", "[fd00::7]")],
)
def test_a_server_bound_to_every_interface_is_probed_on_loopback(bound, reached):
    assert loopback_host(bound) == reached
