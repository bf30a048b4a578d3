"""`pipeserve loadtest` on every inference RPC, each with its own options, against the shared
server of a model per task (conftest's every_task); task options given to another RPC are usage
errors; Ctrl-C ends a run with its report and exit status 130. In process:
tests/unit/test_loadtest_rpcs.py."""

import asyncio
import json
import os
import signal
import subprocess

import pytest

from pipeserve.loadtest import Plan, Setup, build_report, load_test
from tests.servers import PIPESERVE, pipeserve

ALL_STAGES = {"tokenize", "queue", "forward", "postprocess"}


@pytest.mark.parametrize(
    ("rpc", "model", "options"),
    [
        ("embed", "enc", {}),
        ("rerank", "ce", {"query": "what is a film?"}),
        ("rerank", "ce", {}),
        ("classify-zero-shot", "nli", {"candidate_labels": ("film", "food"), "multi_label": True}),
        ("classify-tokens", "ner", {"aggregation_strategy": "simple"}),
        ("fill-mask", "mlm", {"top_k": 3}),
    ],
)
def test_every_task_rpc_is_load_tested_with_its_options(every_task, rpc, model, options):
    setup = Setup(
        every_task.address,
        Plan(concurrency=2, requests=6),
        rpc=rpc,
        items_per_request=3,
        model=model,
        options=options,
    )
    report = build_report(asyncio.run(load_test(setup)), setup)

    assert report["status_codes"] == {"OK": 6}, report["error_examples"]
    assert (report["items"], report["model"]) == (18, model)
    assert report["items_per_s"] == pytest.approx(3 * report["requests_per_s"], rel=0.01)
    listed = {name: list(v) if isinstance(v, tuple) else v for name, v in options.items()}
    assert report["options"] == listed
    assert set(report["stages_ms"]) == ALL_STAGES
    for stage in report["stages_ms"].values():
        assert stage["count"] == 6


def test_the_command_takes_the_task_options_and_reports_items_per_second(every_task):
    result = pipeserve(
        "loadtest", "--target", every_task.address, "--rpc", "classify-zero-shot", "--model", "nli",
        "--labels", "film,food", "--items-per-request", "2", "-n", "4", "--json", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["options"] == {"candidate_labels": ["film", "food"]}
    assert report["items"] == 8 and report["items_per_s"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpc", "classify-zero-shot"], "--rpc classify-zero-shot needs --labels"),
        (["--rpc", "embed", "--labels", "a"], "--labels is for --rpc classify-zero-shot"),
        (["--query", "q"], "--query is for --rpc rerank"),
        (["--rpc", "rerank", "--top-k", "2"], "--top-k is for --rpc fill-mask"),
    ],
)
def test_task_options_of_another_rpc_are_usage_errors(args, message):
    result = pipeserve("loadtest", "--target", "127.0.0.1:1", *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"


def test_ctrl_c_reports_and_exits_130(address):
    run = subprocess.Popen(
        [*PIPESERVE, "loadtest", "--target", address, "--duration", "600", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        assert run.stderr is not None
        first = run.stderr.readline()  # the first progress line: requests are being sent
        assert first.startswith("after "), first
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130
    report = json.loads(out)
    assert report["stopped_early"] and report["requests"] > 0
