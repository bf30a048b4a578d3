"""Start-up and shutdown as an operator meets them: every setting that cannot work refused in
one line before anything loads, the port open (NOT_SERVING) while the models load, a shutdown
within its grace, and what the server's logs and reflection show. LoadModel's refusals and the
log lines' form, in process: tests/unit/test_boot.py."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tests.helpers import require
from tests.servers import launch_server, wait_until

# Runs `pipeserve serve` as the command does, then says which heavy libraries it imported.
_REPORTING_MAIN = (
    "import json, sys\n"
    "from pipeserve.server.__main__ import main\n"
    "code = main(sys.argv[1:])\n"
    "loaded = [name for name in ('torch', 'transformers') if name in sys.modules]\n"
    "print(json.dumps({'code': code, 'loaded': loaded}))\n"
)


def _refusal(*args: str, env: dict[str, str] | None = None) -> str:
    """The one line `pipeserve serve ARGS` stops with, having imported neither torch nor
    transformers (so no model, and no worker, loaded before it)."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _REPORTING_MAIN, "--host", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    seconds = time.monotonic() - started
    report = json.loads(result.stdout)
    assert report == {"code": 1, "loaded": []}, (report, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pipeserve serve: error: "), lines[0]
    print(f"refused in {seconds:.1f} s: {lines[0]}")
    return lines[0].removeprefix("pipeserve serve: error: ")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "admin").write_text("admin-secret\n")
    return folder


def test_an_admin_token_file_that_cannot_be_read_is_refused_at_once(tiny_distilbert, tokens):
    missing = tokens / "no-such-file"
    line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu", "--frontends", "2",
                    "--admin-token-file", str(missing))  # fmt: skip
    assert line == f"--admin-token-file {missing}: No such file or directory"


def test_a_token_for_both_services_is_refused_at_once(tiny_distilbert, tokens):
    admin = str(tokens / "admin")
    line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu", "--frontends", "2",
                    "--admin-token-file", admin, "--auth-token-file", admin)  # fmt: skip
    assert line == (
        "a token is in both --auth-token-file and --admin-token-file; an admin token must be "
        "one of its own"
    )


def test_float16_on_a_cpu_is_refused_at_once(tiny_distilbert):
    line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu", "--dtype", "float16")
    assert line == "--dtype float16 needs a GPU; on CPU use bfloat16 or float32"


def test_static_quantisation_without_calibration_text_is_refused_at_once(tiny_distilbert):
    require(importlib.util.find_spec("openvino") is not None, "openvino not installed")
    line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu",
                    "--backend", "openvino", "--quantize", "int8-static")  # fmt: skip
    assert line.startswith("--quantize int8-static needs --calibration-file FILE")


def test_a_gpu_that_is_not_there_is_refused_at_once(tiny_distilbert):
    line = _refusal(
        "--model", str(tiny_distilbert), "--devices", "0", env={"CUDA_VISIBLE_DEVICES": ""}
    )
    assert line == "--devices 0: GPU 0 is not visible (0 GPUs visible)"


def test_a_port_in_use_is_refused_at_once_without_grpc_lines(tiny_distilbert):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu", "--port", str(port))
    assert line == (
        f"cannot listen on 127.0.0.1:{port} (--port): Address already in use; another process "
        "holds it: stop that one, or choose another port (--port 0 picks a free one)"
    )


def test_a_head_the_checkpoint_is_not_is_refused_at_once(tiny_distilbert):
    line = _refusal("--model", str(tiny_distilbert), "--devices", "cpu", "--task", "fill-mask")
    assert line == (
        f"cannot load model '{tiny_distilbert}' with --task fill-mask: it is a "
        "DistilBertForSequenceClassification, without the fill-mask head (...ForMaskedLM); "
        "serve it as the text-classification model it is with --task auto, or serve that head "
        "randomly initialised with --allow-missing-weights"
    )


def test_question_answering_is_not_offered_and_its_checkpoints_are_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeserve.server", "--task", "question-answering"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid choice: 'question-answering'" in result.stderr
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["BertForQuestionAnswering"], "model_type": "bert"})
    )
    line = _refusal("--model", str(tmp_path), "--devices", "cpu")
    assert line == (
        f"cannot serve model '{tmp_path}': it is a BertForQuestionAnswering, a question "
        "answering head, which no RPC serves; serve its encoder (Forward, Embed) with --task "
        "feature-extraction"
    )


def test_a_wrong_path_in_a_models_file_names_the_file_s_key(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(f'[models.clf]\npath = "{tmp_path / "nothing"}"\n')
    line = _refusal("--models-file", str(models), "--devices", "cpu")
    assert line.startswith(f"cannot load model '{tmp_path / 'nothing'}': no such folder")
    assert line.endswith(
        "[models.clf] path takes a checkpoint folder or a hub id such as "
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    )
    assert "--model" not in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--max-batch-size", "0"],
            "--max-batch-size 0: Input should be greater than or equal to 1",
        ),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    ],
)
def test_invalid_settings_are_said_in_flags(args, expected):
    result = subprocess.run(
        [sys.executable, "-m", "pipeserve.server", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == f"pipeserve serve: error: {expected}\n"


@pytest.mark.parametrize("package", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
def test_reflection_answers_both_versions(server, package):
    """v1 is what grpcurl and current tools ask; its messages are v1alpha's, field for field."""
    ask = reflection_pb2.ServerReflectionRequest
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            f"/{package}.ServerReflection/ServerReflectionInfo",
            request_serializer=ask.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        listed, found = call(
            iter([ask(list_services=""), ask(file_containing_symbol="pipeserve.v1.Inference")]),
            timeout=30,
        )
    services = {s.name for s in listed.list_services_response.service}
    assert {"pipeserve.v1.Inference", "grpc.health.v1.Health", "grpc.reflection.v1."
            "ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= services  # fmt: skip
    assert found.file_descriptor_response.file_descriptor_proto


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


@pytest.mark.slow
def test_health_answers_not_serving_while_openvino_converts(tiny_distilbert, tmp_path):
    """The port opens before the conversion ends (a fresh cache: it converts), so probes and
    callers meet NOT_SERVING rather than a closed port."""
    require(importlib.util.find_spec("openvino") is not None, "openvino not installed")
    started = time.monotonic()
    server = launch_server(tiny_distilbert, "--backend", "openvino", "--cache-dir",
                           str(tmp_path), until_listening=True)  # fmt: skip
    try:
        status = _health(server.address)
        answered = time.monotonic() - started
        converted = [line for line in server.log if "openvino: converted in" in line]
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not converted, "the conversion ended before the port opened"
        print(f"health answered NOT_SERVING {answered:.1f} s after the start")
        serving = health_pb2.HealthCheckResponse.SERVING
        wait_until(lambda: _health(server.address) == serving, timeout=600)
    finally:
        server.stop()
    log = "\n".join(server.log)
    assert log.index("listening on") < log.index("openvino: converted in")


@pytest.mark.slow
def test_sigterm_ends_two_models_and_two_front_ends_within_the_grace(tiny_distilbert, tiny_bert):
    grace = 10
    server = launch_server(f"clf={tiny_distilbert}", "--model", f"enc={tiny_bert}",
                           "--frontends", "2", "--shutdown-grace-s", str(grace))  # fmt: skip
    workers = server.worker_processes()
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(grace + 30)
    seconds = time.monotonic() - started
    server.stop()
    print(f"SIGTERM to exit: {seconds:.1f} s")
    assert code == 0
    assert seconds < grace + 2
    assert server.log[-1].endswith("stopped")
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return "Z"
