"""`pipeserve loadtest` (or `pipeserve-loadtest`): a load tester of any running pipeserve server.

It sends Tokenize, Forward, Classify or ClassifyStream requests and reports, much as ghz does,
requests and items per second, latency percentiles, status-code counts and the server's own
per-stage times (tokenize, queue, forward, postprocess) read from each response's timings.

Two load models:

* closed loop (--concurrency N): N callers, each sending its next request as soon as its last
  one is answered. The load adapts to the server; latency is measured from each send.
* open loop (--rate R): requests fall due on a fixed schedule, R per second, whatever the
  server does. Latency is measured from each request's *scheduled* time, not from when it
  actually went out, so a stalled client or a full in-flight cap (--concurrency with --rate)
  shows up as latency instead of silently thinning the load ("coordinated omission").

A run that cannot succeed (its first requests all fail with the same status) stops early and
says why.

One module per layer, each usable and testable alone:

* pure: `stats` (percentiles), `plan` (what a run is), `report` (samples -> report, as text);
* load generation over an abstract clock and sender: `generate` (no gRPC in it);
* gRPC: `senders` (one request per call or per stream message), `runner` (connect through the
  client's channel factory and run), `progress`;
* `texts`, `plot` (matplotlib, imported by --plot alone) and `command` (the command line).

Needs only the thin client (never torch).
"""

from pipeserve.loadtest.command import main
from pipeserve.loadtest.generate import run_load
from pipeserve.loadtest.plan import Outcome, Plan, Sample, Setup
from pipeserve.loadtest.report import build_report, format_report
from pipeserve.loadtest.runner import load_test
from pipeserve.loadtest.stats import percentile, summarize

__all__ = [
    "Outcome",
    "Plan",
    "Sample",
    "Setup",
    "build_report",
    "format_report",
    "load_test",
    "main",
    "percentile",
    "run_load",
    "summarize",
]
