"""`pipeserve loadtest` in process: statistics, both load models on a virtual clock, stage
times, reports and the command line's parsing. Against a real server: tests/e2e/test_loadtest.py."""

import argparse
import asyncio
import heapq
import itertools
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from pipeserve import loadtest
from pipeserve.client.cli import args as cli_args
from pipeserve.client.cli import main as cli
from pipeserve.loadtest import (
    Outcome,
    Plan,
    Sample,
    Setup,
    build_report,
    format_report,
    percentile,
    run_load,
    summarize,
)
from pipeserve.loadtest import runner as loadtest_runner
from pipeserve.loadtest.command import parse_warmup
from pipeserve.loadtest.senders import stage_times
from pipeserve.loadtest.texts import BUILTIN_TEXTS, read_texts
from pipeserve.v1 import pipeserve_pb2 as pb
from tests.helpers import ROOT, loadtest_cli, require_sst2_dev

# --- Statistics --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1001])
def test_percentiles_match_numpy(size):
    values = np.random.default_rng(size).lognormal(mean=1.0, sigma=0.8, size=size).tolist()
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)


def test_summary_of_known_values():
    summary = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (summary.count, summary.min, summary.max, summary.mean) == (5, 1.0, 5.0, 3.0)
    assert summary.p50 == 3.0
    assert summary.p90 == pytest.approx(np.percentile([1, 2, 3, 4, 5], 90))


def test_empty_input():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    empty = summarize([])
    assert empty.count == 0
    assert empty.to_dict() == {
        "count": 0,
        "min": None,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_report_of_no_samples_prints():
    report = build_report([], Setup("host:1", Plan(requests=5)))
    assert report["requests"] == 0
    assert report["requests_per_s"] == 0.0
    assert "(no requests)" in format_report(report)


def test_stage_times_from_a_responses_timings():
    timings = pb.Timings(tokenize_ms=0.25, forward_ms=3.5, postprocess_ms=0.125)
    # The stages a call did not run (0) are left out.
    assert stage_times(timings) == {"tokenize": 0.25, "forward": 3.5, "postprocess": 0.125}
    assert stage_times(pb.Timings()) == {}


# --- Load models on a virtual clock -------------------------------------------------------------


class VirtualClock:
    """Time that moves only when every task is waiting on it, or when a sender stalls it."""

    def __init__(self) -> None:
        self.time = 0.0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    async def sleep_until(self, when: float) -> None:
        if when <= self.time:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (when, next(self._order), wake))
        await wake

    async def drive(self) -> None:
        """Once the ready tasks have run at the current time, jump to the next wake-up."""
        while True:
            for _ in range(20):
                await asyncio.sleep(0)
            if self._waiters:
                self.time = max(self.time, self._waiters[0][0])
            while self._waiters and self._waiters[0][0] <= self.time:
                heapq.heappop(self._waiters)[2].set_result(None)


def run_virtual(send_factory, plan: Plan) -> list[Sample]:
    async def main() -> list[Sample]:
        clock = VirtualClock()
        driver = asyncio.create_task(clock.drive())
        try:
            return await run_load(send_factory(clock), plan, clock=clock)
        finally:
            driver.cancel()

    return sorted(asyncio.run(main()), key=lambda sample: sample.index)


def test_open_loop_latency_counts_a_client_stall_for_the_requests_it_delayed():
    # 10 requests/s for 1 s; request 2 freezes the client for 0.5 s (a GC pause, a blocked
    # loop). Requests 3 to 7 fall due during the freeze and go out late, at 0.7 s: their
    # latency must count from their due time, not from when they were finally sent.
    def sender(clock):
        async def send(index: int) -> Outcome:
            if index == 2:
                clock.time += 0.5  # synchronous: nothing else runs meanwhile
            await asyncio.sleep(0)
            return Outcome("OK", 1)

        return send

    samples = run_virtual(sender, Plan(concurrency=None, rate=10, duration=1.0))
    assert [s.index for s in samples] == list(range(10))
    assert [s.scheduled for s in samples] == pytest.approx([i / 10 for i in range(10)])
    for sample in samples:
        expected = max(0.0, 0.7 - sample.scheduled) if sample.index >= 2 else 0.0
        assert sample.latency == pytest.approx(expected, abs=1e-9), sample
    late = [s for s in samples if 3 <= s.index <= 7]
    assert all(s.sent == pytest.approx(0.7) for s in late)
    # Measured from the send, as a closed-loop tool would, the stall would vanish:
    assert all(s.done - s.sent == 0 for s in late)
    assert all(s.latency > 0 for s in late[:-1])


def test_open_loop_with_a_cap_counts_the_wait_for_a_slot():
    # A server that takes 0.25 s per request, one request in flight, 10 due per second:
    # request k goes out at 0.25 k, answered at 0.25 (k + 1), but was due at 0.1 k.
    def sender(clock):
        async def send(index: int) -> Outcome:
            await clock.sleep_until(clock.now() + 0.25)
            return Outcome("OK", 1)

        return send

    samples = run_virtual(sender, Plan(concurrency=1, rate=10, duration=1.0))
    assert len(samples) == 10
    for sample in samples:
        assert sample.done - sample.sent == pytest.approx(0.25)
        assert sample.latency == pytest.approx(0.25 + 0.15 * sample.index)
    report = build_report(samples, Setup("virtual", Plan(concurrency=1, rate=10, duration=1.0)))
    assert report["latency_ms"]["max"] == pytest.approx(1600.0)
    assert report["send_lag_ms"]["max"] == pytest.approx(1350.0)


def test_closed_loop_honours_request_count_and_warmup_requests():
    def sender(clock):
        async def send(index: int) -> Outcome:
            await clock.sleep_until(clock.now() + 0.01 * (1 + index % 3))
            return Outcome("OK", 2)

        return send

    plan = Plan(concurrency=3, requests=10, warmup_requests=4)
    samples = run_virtual(sender, plan)
    assert [s.index for s in samples] == list(range(14))
    assert [s.index for s in samples if s.warmup] == [0, 1, 2, 3]
    assert all(s.sent == s.scheduled for s in samples)  # closed loop: latency from the send
    report = build_report(samples, Setup("virtual", plan))
    assert (report["requests"], report["warmup_completed"], report["items"]) == (10, 4, 20)


def test_closed_loop_honours_duration_and_warmup_time():
    def sender(clock):
        async def send(index: int) -> Outcome:
            await clock.sleep_until(clock.now() + 0.125)
            return Outcome("OK", 1)

        return send

    # One caller, 8 requests a second: 2 during the 0.25 s warmup, then 8 in the 1 s measured.
    samples = run_virtual(sender, Plan(concurrency=1, duration=1.0, warmup_s=0.25))
    assert sum(s.warmup for s in samples) == 2
    assert sum(not s.warmup for s in samples) == 8


def test_open_loop_warmup_time_is_not_counted():
    def sender(clock):
        async def send(index: int) -> Outcome:
            return Outcome("OK", 1)

        return send

    samples = run_virtual(sender, Plan(concurrency=None, rate=20, duration=0.5, warmup_s=0.25))
    assert sum(s.warmup for s in samples) == 5
    assert sum(not s.warmup for s in samples) == 10


def _failing(code_of):
    def sender(clock):
        async def send(index: int) -> Outcome:
            await clock.sleep_until(clock.now() + 0.01)
            code = code_of(index)
            return Outcome(code, 1, details="" if code == "OK" else f"{code} details")

        return send

    return sender


@pytest.mark.parametrize("rate", [None, 50.0])
def test_a_run_whose_first_answers_all_fail_alike_gives_up(rate):
    plan = Plan(concurrency=2, rate=rate, duration=1000.0, warmup_requests=5)
    samples = run_virtual(_failing(lambda index: "UNAUTHENTICATED"), plan)

    # The 20th answer ends it; what was in flight then is still awaited.
    assert 20 <= len(samples) <= 22
    report = build_report(samples, Setup("virtual", plan))
    assert report["stopped_early"]
    assert report["gave_up"] == {
        "after": 20,
        "code": "UNAUTHENTICATED",
        "details": "UNAUTHENTICATED details",
    }
    assert (
        "Gave up:     the first 20 requests all failed with UNAUTHENTICATED: "
        "UNAUTHENTICATED details" in format_report(report)
    )


@pytest.mark.parametrize(
    ("code_of", "give_up_after"),
    [
        (lambda index: "OK" if index == 19 else "UNAVAILABLE", 20),  # one success is hope
        (lambda index: "UNAVAILABLE" if index % 2 else "INTERNAL", 20),  # not all alike
        (lambda index: "UNAVAILABLE", None),  # asked never to give up
    ],
)
def test_a_run_with_hope_runs_to_its_end(code_of, give_up_after):
    plan = Plan(concurrency=1, requests=50, give_up_after=give_up_after)
    samples = run_virtual(_failing(code_of), plan)

    assert len(samples) == 50
    report = build_report(samples, Setup("virtual", plan))
    assert report["gave_up"] is None
    assert not report["stopped_early"]


def test_plan_needs_a_bound():
    with pytest.raises(ValueError, match="duration"):
        Plan()


def test_open_loop_keeps_the_rate_when_answers_are_slow():
    # 20 requests/s for 1.5 s against a server that takes 0.5 s per answer, 10 times the
    # interval: an open loop does not wait for answers, so each request goes out when due.
    def sender(clock):
        async def send(index: int) -> Outcome:
            await clock.sleep_until(clock.now() + 0.5)
            return Outcome("OK", 1)

        return send

    samples = run_virtual(sender, Plan(concurrency=None, rate=20, duration=1.5))
    assert [s.index for s in samples] == list(range(30))
    assert [s.sent for s in samples] == pytest.approx([i / 20 for i in range(30)])
    assert [s.latency for s in samples] == pytest.approx([0.5] * 30)


# --- Command line -------------------------------------------------------------------------------


def test_unreachable_server_fails_fast_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(loadtest_runner, "CONNECT_TIMEOUT_S", 0.5)
    status, out, err = loadtest_cli(capsys, "--target", "127.0.0.1:1", "-n", "1", "-q")
    assert status == 1
    assert out == ""
    assert err.strip() == "error: UNAVAILABLE: no server answered at 127.0.0.1:1 within 0.5 s"


@pytest.mark.parametrize(
    "args",
    [
        ["--outputs", "logits"],  # classify takes no outputs
        ["--column", "sentence"],  # no --texts
        ["--warmup", "ten"],
        ["--rate", "0"],
        ["--rpc", "generate"],
    ],
)
def test_usage_errors_exit_2(capsys, args):
    status, _, err = loadtest_cli(capsys, "--target", "127.0.0.1:1", *args)
    assert status == 2
    assert "Traceback" not in err


def test_plot_without_matplotlib_says_so_in_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    status, out, err = loadtest_cli(capsys, "--target", "127.0.0.1:1", "--plot", "latency.png")
    assert status == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "error: --plot needs matplotlib: pip install 'pipeserve[plot]'"
    ]


def test_importing_pulls_neither_torch_nor_matplotlib():
    code = (
        "import sys, pipeserve.loadtest, pipeserve.client.cli.main as cli; cli.build_parser(); "
        "print(sorted({'torch', 'transformers', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- Arguments and texts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("2", (2.0, 0)), ("1.5s", (1.5, 0)), ("50r", (0.0, 50)), ("0", (0.0, 0))]
)
def test_parse_warmup(text, expected):
    assert parse_warmup(text) == expected


@pytest.mark.parametrize("text", ["", "r", "-1", "2m", "1.5r", "nan"])
def test_parse_warmup_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_warmup(text)


def test_read_texts_lines_and_columns(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("first line  \n\n   \nsecond\tline\n", "utf-8")
    assert read_texts(str(plain)) == ["first line", "second\tline"]
    table = tmp_path / "table.tsv"
    table.write_text("sentence\tlabel\nhello there \t1\nbye\t0\n", "utf-8")
    assert read_texts(str(table), "sentence") == ["hello there", "bye"]
    assert read_texts(str(table), "2") == ["label", "1", "0"]  # by number: no header
    with pytest.raises(cli_args.UsageError, match="not in the header row"):
        read_texts(str(table), "text")


def test_read_sst2_dev_sentences():
    dev = require_sst2_dev()
    texts = read_texts(str(dev), "sentence")
    assert texts[0] == "it 's a charming and often affecting journey ."
    assert len(texts) == len(dev.read_text("utf-8").splitlines()) - 1
    assert all(text == text.rstrip() for text in texts)


def test_builtin_texts_vary_in_length():
    lengths = [len(text.split()) for text in BUILTIN_TEXTS]
    assert len(BUILTIN_TEXTS) == 20
    assert min(lengths) <= 3
    assert max(lengths) >= 25


def test_console_script_entry_point_is_the_same_command(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["loadtest", "--help"])
    assert "--rate" in capsys.readouterr().out
    assert loadtest.main(["--target", "127.0.0.1:1", "--rpc", "nope"]) == 2
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    scripts = pyproject["project"]["scripts"]
    assert scripts["pipeserve-loadtest"] == "pipeserve.loadtest:main"
    assert pyproject["project"]["optional-dependencies"]["plot"] == ["matplotlib>=3.8"]
