"""OpenTelemetry traces (--tracing) through a real server with two front ends and the console
exporter: one call's spans, parsed from every process's output, form one tree under the
caller's span across a front end, the engine and a worker; a stream's messages are children of
its one server span; a refused call marks the step that refused it. A server without
OpenTelemetry says what to install. The engine's spans in process: tests/unit/test_tracing.py."""

import json
import os
import re
import signal
import subprocess
import sys

import grpc
import pytest
from opentelemetry import trace

from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import caller_spans, traceparent
from tests.servers import wait_until


def test_the_server_runs_without_opentelemetry_and_tracing_says_what_to_install(tiny_distilbert):
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import pipeserve.server.app, pipeserve.server.frontends.process\n"
        "import pipeserve.server.workers.worker\n"
        "from pipeserve.server.__main__ import main\n"
        f"sys.exit(main(['--model', {str(tiny_distilbert)!r}, '--tracing']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "pipeserve serve: error: --tracing needs OpenTelemetry: pip install 'pipeserve[tracing]'"
    )


# A real server: two front ends, the engine in the main process, one worker.

_READY = re.compile(r"ready on (\S+):(\d+) with")


def _spans_in(text: str) -> list[dict]:
    """The spans the console exporter wrote: JSON objects one after the other."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        span, at = decoder.raw_decode(text, at)
        spans.append(span)
    return spans


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


@pytest.fixture(scope="module")
def traced_server_spans(tiny_distilbert, tmp_path_factory) -> dict[str, dict]:
    """A Classify, a ClassifyStream of two and a refused Classify, each under a caller span
    of its own, through a traced server with two front ends; its spans by caller name, read
    once the server has stopped (every process flushes its spans as it exits)."""
    folder = tmp_path_factory.mktemp("traced")
    out, err = folder / "spans.json", folder / "server.log"
    command = [
        sys.executable, "-m", "pipeserve.server", "--model", str(tiny_distilbert),
        "--host", "127.0.0.1", "--port", "0", "--devices", "cpu", "--frontends", "2",
        "--max-text-chars", "100", "--tracing",
    ]  # fmt: skip
    # One span a write: the processes share the file, and a write is never split.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OTEL_TRACES_EXPORTER": "console",
           "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1"}  # fmt: skip
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        wait_until(lambda: _READY.search(err.read_text()) or proc.poll() is not None, 240)
        match = _READY.search(err.read_text())
        assert match, err.read_text()
        callers = dict(zip(("classify", "stream", "refused"), caller_spans(3), strict=True))
        with grpc.insecure_channel(f"{match.group(1)}:{match.group(2)}") as channel:
            stub = pb_grpc.InferenceStub(channel)

            def metadata(name: str) -> tuple:
                return (("traceparent", traceparent(callers[name])),)

            stub.Classify(
                pb.ClassifyRequest(inputs=[pb.ModelInput(text="a fine film")]),
                metadata=metadata("classify"),
                timeout=60,
            )
            messages = [
                pb.ClassifyStreamRequest(
                    id=str(i), request=pb.ClassifyRequest(inputs=[pb.ModelInput(text=t)])
                )
                for i, t in enumerate(["so dull", "a joy"])
            ]
            answers = stub.ClassifyStream(iter(messages), metadata=metadata("stream"), timeout=60)
            assert sorted(a.id for a in answers) == ["0", "1"]
            with pytest.raises(grpc.RpcError) as refused:
                stub.Classify(
                    pb.ClassifyRequest(inputs=[pb.ModelInput(text="x" * 101)]),
                    metadata=metadata("refused"),
                    timeout=60,
                )
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.read_text()
    spans = _spans_in(out.read_text())
    by_trace = {f"0x{c.get_span_context().trace_id:032x}": name for name, c in callers.items()}
    grouped: dict[str, list[dict]] = {name: [] for name in callers}
    for span in spans:
        grouped[by_trace[span["context"]["trace_id"]]].append(span)
    return {name: {"caller": callers[name], "spans": grouped[name]} for name in callers}


def _tree(spans: list[dict], root_parent: str) -> dict[str, list[dict]]:
    """The spans' children by parent span id; checks that they form one tree under
    `root_parent` (every parent is one of them, or the caller)."""
    ids = {s["context"]["span_id"] for s in spans}
    children: dict[str, list[dict]] = {}
    for span in spans:
        assert span["parent_id"] in ids | {root_parent}, span["name"]
        children.setdefault(span["parent_id"], []).append(span)
    return children


def _process(span: dict) -> tuple[str, int]:
    attributes = span["resource"]["attributes"]
    return attributes["pipeserve.process"], attributes["process.pid"]


def _caller_id(caller: trace.Span) -> str:
    return f"0x{caller.get_span_context().span_id:016x}"


@pytest.mark.slow
def test_a_calls_spans_form_one_tree_across_a_front_end_the_engine_and_a_worker(
    traced_server_spans,
):
    traced = traced_server_spans["classify"]
    children = _tree(traced["spans"], _caller_id(traced["caller"]))
    (server,) = children[_caller_id(traced["caller"])]
    assert server["name"] == "pipeserve.v1.Inference/Classify"
    assert server["kind"] == "SpanKind.SERVER"
    assert server["attributes"] == {
        "rpc.system": "grpc",
        "rpc.service": "pipeserve.v1.Inference",
        "rpc.method": "Classify",
        "rpc.grpc.status_code": 0,
    }
    steps = {s["name"]: s for s in children[server["context"]["span_id"]]}
    assert sorted(steps) == ["admission", "forward", "postprocess", "queue", "tokenize"]
    (batch,) = children[steps["forward"]["context"]["span_id"]]
    assert batch["name"] == "batch"
    assert (
        batch["attributes"]["pipeserve.batch.size"]
        == steps["forward"]["attributes"]["pipeserve.batch.size"]
    )
    assert [link["context"]["span_id"] for link in batch["links"]] == [
        steps["forward"]["context"]["span_id"]
    ]
    # Three processes: the front end that took the call, the engine's, the worker.
    frontend, engine, worker = _process(server), _process(steps["queue"]), _process(batch)
    assert [frontend[0], engine[0], worker[0]] == ["frontend", "main", "worker"]
    assert len({frontend[1], engine[1], worker[1]}) == 3
    for name in ("admission", "tokenize", "postprocess"):
        assert _process(steps[name]) == frontend
    assert _process(steps["forward"]) == engine


@pytest.mark.slow
def test_a_streams_messages_are_children_of_its_one_server_span(traced_server_spans):
    traced = traced_server_spans["stream"]
    children = _tree(traced["spans"], _caller_id(traced["caller"]))
    (server,) = children[_caller_id(traced["caller"])]
    assert server["name"] == "pipeserve.v1.Inference/ClassifyStream"
    names = sorted(s["name"] for s in children[server["context"]["span_id"]])
    assert names == sorted(["admission", "tokenize", "queue", "forward", "postprocess"] * 2)
    assert any(s["name"] == "batch" for s in traced["spans"])


@pytest.mark.slow
def test_a_refused_call_marks_the_step_that_refused_it(traced_server_spans):
    traced = traced_server_spans["refused"]
    children = _tree(traced["spans"], _caller_id(traced["caller"]))
    (server,) = children[_caller_id(traced["caller"])]
    assert server["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # The caller's mistake, not the server's fault: the call's span is not failed.
    assert server["status"]["status_code"] == "UNSET"
    (admission,) = children[server["context"]["span_id"]]
    assert admission["name"] == "admission"
    assert admission["status"]["status_code"] == "ERROR"
    assert "max_text_chars" in admission["status"]["description"]
