"""`pipeserve loadtest` against a real server: both load models, every RPC, status-code
counting, the reports and the command line's exit status. Statistics, the load models on a
virtual clock and the command line's parsing: tests/unit/test_loadtest.py."""

import asyncio
import json

import pytest

from pipeserve.loadtest import (
    Plan,
    Setup,
    build_report,
    load_test,
)
from pipeserve.loadtest.texts import BUILTIN_TEXTS
from tests.helpers import loadtest_cli

# --- Against a real server -----------------------------------------------------------------------


def run_report(setup: Setup, texts=BUILTIN_TEXTS) -> dict:
    return build_report(asyncio.run(load_test(setup, texts)), setup)


def test_closed_loop_against_the_server(address):
    setup = Setup(address, Plan(concurrency=4, requests=20))
    report = run_report(setup)
    assert report["requests"] == report["ok"] == 20
    assert report["status_codes"] == {"OK": 20}
    assert report["latency_ms"]["count"] == 20
    latency = report["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert report["requests_per_s"] > 0
    # Classify reports its stages in each response; every OK response carried them.
    assert set(report["stages_ms"]) == {"tokenize", "queue", "forward", "postprocess"}
    for stage in report["stages_ms"].values():
        assert stage["count"] == 20
        assert 0 <= stage["p50"] <= stage["p99"]
    assert report["stages_ms"]["forward"]["mean"] > 0


@pytest.mark.parametrize(
    ("rpc", "outputs", "stages"),
    [
        ("tokenize", (), {"tokenize"}),
        ("forward", ("logits",), {"tokenize", "queue", "forward"}),
        ("forward", ("last_hidden_state",), {"tokenize", "queue", "forward"}),
        ("classify-stream", (), {"tokenize", "queue", "forward", "postprocess"}),
    ],
)
def test_every_rpc(address, rpc, outputs, stages):
    setup = Setup(
        address,
        Plan(concurrency=2, requests=8),
        rpc=rpc,
        items_per_request=3,
        outputs=outputs,
    )
    report = run_report(setup)
    assert report["status_codes"] == {"OK": 8}
    assert report["items"] == 24
    assert set(report["stages_ms"]) == stages
    for stage in report["stages_ms"].values():
        assert stage["count"] == 8


def test_open_loop_against_the_server_answers_every_request(address):
    setup = Setup(address, Plan(concurrency=None, rate=20, duration=1.5))
    report = run_report(setup)
    assert report["status_codes"] == {"OK": 30}
    assert report["send_lag_ms"]["count"] == 30


@pytest.fixture
def refused_text() -> str:
    # Over the server's default max_text_chars (50 000): INVALID_ARGUMENT, never queued.
    return "too long " * 6000


@pytest.mark.parametrize("rpc", ["classify", "classify-stream", "tokenize"])
def test_refused_requests_are_counted_by_code(address, rpc, refused_text):
    setup = Setup(address, Plan(concurrency=2, requests=10), rpc=rpc)
    # Request i carries text i % 2: every other request is refused.
    report = run_report(setup, ["A short and acceptable sentence.", refused_text])
    assert report["status_codes"] == {"OK": 5, "INVALID_ARGUMENT": 5}
    assert report["errors"] == 5
    assert report["error_latency_ms"]["count"] == 5
    assert "max_text_chars" in report["error_examples"]["INVALID_ARGUMENT"]


@pytest.mark.parametrize("rpc", ["classify", "classify-stream"])
def test_deadline_exceeded_is_counted(address, rpc):
    setup = Setup(address, Plan(concurrency=2, requests=6), rpc=rpc, timeout=1e-6)
    report = run_report(setup)
    assert report["status_codes"] == {"DEADLINE_EXCEEDED": 6}
    assert report["latency_ms"]["count"] == 0


# --- Command line --------------------------------------------------------------------------------


def test_json_report(capsys, address):
    status, out, err = loadtest_cli(
        capsys, "--target", address, "-n", "10", "-c", "2", "--warmup", "3r", "--json"
    )
    assert status == 0, err
    report = json.loads(out)
    for key in (
        "target",
        "rpc",
        "load",
        "requests",
        "ok",
        "errors",
        "requests_per_s",
        "items_per_s",
        "latency_ms",
        "status_codes",
        "error_examples",
        "stages_ms",
    ):
        assert key in report
    assert (report["requests"], report["warmup_completed"]) == (10, 3)
    assert report["load"] == {
        "model": "closed",
        "concurrency": 2,
        "rate": None,
        "duration_s": None,
        "requests": 10,
        "warmup_s": 0.0,
        "warmup_requests": 3,
        "give_up_after": 20,
    }
    assert set(report["latency_ms"]) == {"count", "min", "mean", "p50", "p90", "p95", "p99", "max"}
    assert set(report["stages_ms"]) == {"tokenize", "queue", "forward", "postprocess"}
    assert err.splitlines()[-1].startswith("done in ")  # the final progress line


def test_text_report_and_texts_from_a_tsv_column(capsys, address, tmp_path):
    table = tmp_path / "texts.tsv"
    table.write_text("label\tsentence\n1\tit 's a charming journey . \n0\tbleak \n", "utf-8")
    status, out, err = loadtest_cli(
        capsys,
        "--target",
        address,
        "--rate",
        "50",
        "-n",
        "5",
        "--texts",
        str(table),
        "--column",
        "sentence",
        "--quiet",
    )
    assert status == 0, err
    assert err == ""  # --quiet
    for heading in ("Summary:", "Latency (ms, 5 OK responses):", "Status codes:"):
        assert heading in out
    assert "open loop, 50 requests/s scheduled" in out
    assert "Server stage times (ms, from each response's timings):" in out
    assert any(line.split()[:2] == ["OK", "5"] for line in out.splitlines())


def test_cli_exit_status_is_1_when_every_request_fails(capsys, address, tmp_path, refused_text):
    texts = tmp_path / "long.txt"
    texts.write_text(refused_text + "\n", "utf-8")
    status, out, err = loadtest_cli(
        capsys, "--target", address, "-n", "4", "--texts", str(texts), "--json", "-q"
    )
    assert status == 1
    report = json.loads(out)
    assert report["status_codes"] == {"INVALID_ARGUMENT": 4}
    # Too few to give up, yet the one line on stderr says why.
    assert report["gave_up"] is None
    example = report["error_examples"]["INVALID_ARGUMENT"]
    assert err == f"error: none of 4 requests succeeded: INVALID_ARGUMENT (4): {example}\n"


def test_plot(capsys, address, tmp_path):
    path = tmp_path / "latency.png"
    status, _, err = loadtest_cli(
        capsys, "--target", address, "-n", "20", "-q", "--plot", str(path)
    )
    assert status == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
