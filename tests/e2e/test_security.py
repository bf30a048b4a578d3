"""TLS, mutual TLS and bearer tokens against real servers, with throwaway certificates."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pipeserve.client import Client, PipeserveError, tls_credentials
from pipeserve.client.cli.main import subcommands
from tests.helpers import SEED_SENTENCES
from tests.servers import MTLS_ADMIN_TOKEN, MTLS_TOKEN, launch_server, pipeserve

pytestmark = pytest.mark.slow  # servers of their own with TLS and tokens

SERVING = health_pb2.HealthCheckResponse.SERVING


def _classify(address: str, **client_args) -> str:
    with Client(address, **{"timeout": 20, **client_args}) as client:
        return client.classify(SEED_SENTENCES[:1])[0][0].label


def test_tls_server_refuses_plain_text_and_serves_tls(tiny_distilbert, pki):
    server = launch_server(
        tiny_distilbert, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")
    )
    try:
        with pytest.raises(PipeserveError) as refused:
            _classify(server.address, timeout=5)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        label = _classify(server.address, credentials=tls_credentials(pki / "ca.pem"))
        assert label in ("NEGATIVE", "POSITIVE")
        # The Docker/Kubernetes probe speaks TLS too.
        probe = subprocess.run(
            [sys.executable, "-m", "pipeserve.client.cli", "health", "--target", server.address,
             "--tls-ca", str(pki / "ca.pem")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        server.stop()


def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(mtls_server, pki):
    for credentials in (
        tls_credentials(pki / "ca.pem"),
        tls_credentials(pki / "ca.pem", pki / "stranger.pem", pki / "stranger.key"),
    ):
        with pytest.raises(PipeserveError) as refused:
            _classify(mtls_server.address, credentials=credentials, token=MTLS_TOKEN)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    trusted = tls_credentials(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    label = _classify(mtls_server.address, credentials=trusted, token=MTLS_TOKEN)
    assert label in ("NEGATIVE", "POSITIVE")


def _tls_args(server, pki: Path) -> list[str]:
    return [
        "--target", server.address,
        "--tls-ca", str(pki / "ca.pem"),
        "--tls-cert", str(pki / "client.pem"),
        "--tls-key", str(pki / "client.key"),
    ]  # fmt: skip


# Every client subcommand (test_the_commands_are_every_client_subcommand checks), with the
# served model it needs.
_COMMANDS = {
    "tokenize": ["tokenize", "hello"],
    "forward": ["forward", "--summary", "hello"],
    "classify": ["classify", "hello"],
    "info": ["info"],
    "models": ["models"],
    "health": ["health"],
    "stream": ["stream"],
    "loadtest": ["loadtest", "-n", "3", "-q", "--json"],
    "classify-tokens": ["classify-tokens", "--model", "ner", "Paris is in France"],
    "fill-mask": ["fill-mask", "--model", "mlm", "Paris is the [MASK] of France."],
    "embed": ["embed", "--model", "enc", "--summary", "hello"],
    "rerank": ["rerank", "--model", "ce", "a query", "one document", "another"],
    "classify-zero-shot": ["classify-zero-shot", "--model", "nli", "--labels", "a,b", "hello"],
}


def test_the_commands_are_every_client_subcommand():
    # `admin` takes an admin token: test_admin_commands_reach_a_server_with_tls_and_a_token.
    assert set(_COMMANDS) | {"admin"} == {command.name for command in subcommands()}


# Each command once, the three ways of giving the token taken in turn.
@pytest.mark.parametrize(
    ("command", "token_from"),
    list(zip(_COMMANDS, itertools.cycle(["flag", "environment", "file"]), strict=False)),
)
def test_every_command_reaches_a_server_with_tls_and_a_token(
    mtls_server, pki, tmp_path, command, token_from
):
    args, env = [*_COMMANDS[command], *_tls_args(mtls_server, pki)], {"PIPESERVE_TOKEN": ""}
    if token_from == "flag":
        args += ["--token", MTLS_TOKEN]
    elif token_from == "environment":
        env["PIPESERVE_TOKEN"] = MTLS_TOKEN
    else:
        (tmp_path / "token").write_text(f"{MTLS_TOKEN}\n")
        args += ["--token-file", str(tmp_path / "token")]

    result = pipeserve(*args, env=env, stdin="hello\n")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip()
    assert "UNAUTHENTICATED" not in result.stdout


@pytest.mark.parametrize("command", _COMMANDS)
def test_commands_without_the_token_are_refused(mtls_server, pki, command):
    result = pipeserve(
        *_COMMANDS[command],
        *_tls_args(mtls_server, pki),
        env={"PIPESERVE_TOKEN": ""},
        stdin="hello\n",
    )

    assert result.returncode == 1
    # One line on stderr that says why, as a refused call of any command prints.
    (line,) = [line for line in result.stderr.splitlines() if "UNAUTHENTICATED" in line]
    assert line.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_admin_commands_reach_a_server_with_tls_and_a_token(
    mtls_server, pki, task_models, tmp_path
):
    (tmp_path / "admin").write_text(f"{MTLS_ADMIN_TOKEN}\n")
    tls = _tls_args(mtls_server, pki)
    refused = pipeserve("admin", "unload", "enc", *tls, "--token", MTLS_TOKEN)  # not an admin token
    assert refused.returncode == 1
    (line,) = [line for line in refused.stderr.splitlines() if "UNAUTHENTICATED" in line]
    assert line.startswith("error: ")

    enc = str(task_models["enc"])
    admin_env = {"PIPESERVE_TOKEN": MTLS_ADMIN_TOKEN}
    loaded = pipeserve("admin", "load", "spare", enc, *tls, env=admin_env)
    assert loaded.returncode == 0, loaded.stderr
    unloaded = pipeserve("admin", "unload", "spare", *tls, "--token-file", str(tmp_path / "admin"))
    assert unloaded.returncode == 0, unloaded.stderr
    assert json.loads(unloaded.stdout)["name"] == "spare"


def test_a_load_test_that_cannot_succeed_stops_early_and_says_why(mtls_server, pki):
    # Asked to run for ten minutes: every call fails the same way, so it gives up at once.
    result = pipeserve(
        "loadtest", "--duration", "600", "-c", "2", *_tls_args(mtls_server, pki),
        env={"PIPESERVE_TOKEN": ""},
    )  # fmt: skip

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped early: the first 20 requests all failed with ")
    assert "UNAUTHENTICATED" in last
    assert "Gave up:     the first 20 requests all failed with UNAUTHENTICATED" in result.stdout


@pytest.fixture(scope="module")
def token_server(tiny_distilbert, tmp_path_factory):
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text("# service tokens\nalpha-token\n\nbeta-token\n")
    server = launch_server(tiny_distilbert, "--auth-token-file", str(tokens), "--auth-open-health")
    yield server
    server.stop()


@pytest.mark.parametrize("token", [None, "wrong", "alpha-toke", "alpha-token2"])
def test_missing_or_wrong_token_is_unauthenticated(token_server, token):
    with pytest.raises(PipeserveError) as refused:
        _classify(token_server.address, token=token)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["alpha-token", "beta-token"])
def test_every_listed_token_is_accepted(token_server, token):
    assert _classify(token_server.address, token=token) in ("NEGATIVE", "POSITIVE")


def test_health_is_open_without_token_when_asked(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def locked_server(tiny_distilbert, tmp_path_factory):
    """Tokens without --auth-open-health, and no reflection."""
    tokens = tmp_path_factory.mktemp("locked") / "tokens"
    tokens.write_text("gamma-token\n")
    server = launch_server(tiny_distilbert, "--auth-token-file", str(tokens), "--no-reflection")
    yield server
    server.stop()


def _health(address: str, token: str | None) -> health_pb2.HealthCheckResponse:
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10, metadata=metadata
        )


def test_health_needs_a_token_without_auth_open_health(locked_server):
    with pytest.raises(grpc.RpcError) as refused:
        _health(locked_server.address, None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _health(locked_server.address, "gamma-token").status == SERVING


def test_no_reflection_turns_reflection_off(locked_server):
    """Asked with a valid token, so that only --no-reflection can refuse (reflection when on is
    in tests/e2e/test_operability.py)."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(locked_server.address) as channel:
        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request]), timeout=10, metadata=[("authorization", "Bearer gamma-token")]
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(answers)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
