"""load-test a running server (closed or open loop): throughput, latency, status codes

The command line: its arguments (the client's --target, TLS and token arguments come from
pipeserve.client.cli.main), the Setup they describe, and the run, which Ctrl-C ends early.
"""

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pipeserve.client.cli import args as cli_args
from pipeserve.client.cli import main as pipeserve_cli
from pipeserve.loadtest.plan import (
    DEFAULT_DURATION_S,
    DEFAULT_QUERY,
    OPTIONS,
    RPCS,
    Plan,
    Sample,
    Setup,
)
from pipeserve.loadtest.plot import PLOT_MISSING, have_matplotlib, plot_report
from pipeserve.loadtest.report import (
    build_report,
    failed_line,
    format_report,
    gave_up_line,
)
from pipeserve.loadtest.runner import load_test
from pipeserve.loadtest.texts import BUILTIN_TEXTS, read_texts
from pipeserve.wire import AGGREGATION_STRATEGIES


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive int, got {text!r}")
    return int(text)


def parse_warmup(text: str) -> tuple[float, int]:
    """--warmup: '2' or '2s' is two seconds, '50r' fifty requests -> (seconds, requests)."""
    value = text.strip().lower()
    try:
        if value.endswith("r"):
            requests = int(value[:-1])
            if requests >= 0:
                return 0.0, requests
        else:
            seconds = float(value.removesuffix("s"))
            if seconds >= 0 and math.isfinite(seconds):
                return seconds, 0
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected seconds (2, 2s) or requests (50r), got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The loadtest arguments (cli adds --target, --timeout and --indent)."""
    what = parser.add_argument_group("what to send")
    what.add_argument("--rpc", choices=RPCS, default="classify", help="(default: classify)")
    cli_args.add_model_argument(what)
    what.add_argument(
        "--outputs",
        type=cli_args.comma_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="forward only: outputs to ask for, e.g. logits or last_hidden_state "
        "(default: the model's own)",
    )
    what.add_argument(
        "--items-per-request",
        type=_positive(int),
        default=1,
        metavar="N",
        help="texts per request (default: 1)",
    )
    what.add_argument(
        "--texts",
        metavar="FILE",
        help="texts to send, one per line ('-': stdin); default: 20 built-in English sentences",
    )
    what.add_argument(
        "--column",
        metavar="NAME|N",
        help="with --texts: take this tab-separated column, by header name (e.g. sentence) "
        "or by number from 1",
    )
    task = parser.add_argument_group("task RPCs' options")
    task.add_argument(
        "--query",
        help=f"rerank: the query the texts are ranked against (default: {DEFAULT_QUERY!r}); "
        "--items-per-request is then documents per request",
    )
    task.add_argument(
        "--labels",
        type=cli_args.comma_list,
        action="extend",
        metavar="LABEL[,LABEL...]",
        help="classify-zero-shot (needed): the candidate labels",
    )
    task.add_argument(
        "--multi-label", action="store_true", help="classify-zero-shot: score each label alone"
    )
    task.add_argument(
        "--aggregation-strategy",
        choices=list(AGGREGATION_STRATEGIES),
        help="classify-tokens: how tokens become entities (default: none)",
    )
    task.add_argument(
        "--top-k",
        type=_positive(int),
        metavar="K",
        help="fill-mask: candidates per mask (default: 5); a text without the model's mask "
        "token gets it in place of its last word",
    )
    load = parser.add_argument_group("load (closed loop unless --rate)")
    load.add_argument(
        "-c",
        "--concurrency",
        type=_positive(int),
        metavar="N",
        help="closed loop: N callers, each sending back to back (default: 1); with --rate: "
        "the most requests in flight (default: no limit)",
    )
    load.add_argument(
        "--rate",
        type=_positive(float),
        metavar="R",
        help="open loop: R requests per second on a fixed schedule; latency counts from each "
        "request's scheduled time",
    )
    load.add_argument(
        "--duration",
        type=_positive(float),
        metavar="SECONDS",
        help=f"measure this long (default: {DEFAULT_DURATION_S:g} unless --requests)",
    )
    load.add_argument(
        "-n",
        "--requests",
        type=_positive(int),
        metavar="N",
        help="measure N requests (with --duration, whichever ends first)",
    )
    load.add_argument(
        "--give-up-after",
        type=_non_negative_int,
        default=Plan.give_up_after,
        metavar="N",
        help="stop when the first N requests all fail with the same status code, and say why "
        f"(default: {Plan.give_up_after}; 0: never)",
    )
    load.add_argument(
        "--warmup",
        type=parse_warmup,
        default=(0.0, 0),
        metavar="SECONDS|Nr",
        help="first seconds (2, 2s) or requests (50r) sent but not counted (default: none)",
    )
    out = parser.add_argument_group("report")
    out.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw latency over time and a latency histogram (needs pipeserve[plot])",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")


# Each task option's flag, and the name its client call gives it.
_TASK_FLAGS = {
    "query": "--query",
    "labels": "--labels",
    "multi_label": "--multi-label",
    "aggregation_strategy": "--aggregation-strategy",
    "top_k": "--top-k",
}
_OPTION_NAMES = {"labels": "candidate_labels"}


def _task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given (plan.OPTIONS), by their client names; UsageError for one the
    RPC does not take, or zero-shot without labels."""
    options = {}
    for dest, flag in _TASK_FLAGS.items():
        value = getattr(args, dest)
        if value is None or value is False:
            continue
        name = _OPTION_NAMES.get(dest, dest)
        if args.rpc not in OPTIONS[name]:
            raise cli_args.UsageError(f"{flag} is for --rpc {' or '.join(OPTIONS[name])}")
        options[name] = tuple(value) if isinstance(value, list) else value
    if args.rpc == "classify-zero-shot" and "candidate_labels" not in options:
        raise cli_args.UsageError("--rpc classify-zero-shot needs --labels")
    return options


def setup_from_args(args: argparse.Namespace) -> Setup:
    """The Setup the parsed arguments ask for; UsageError when they do not fit together."""
    if args.outputs and args.rpc != "forward":
        raise cli_args.UsageError("--outputs is for --rpc forward")
    options = _task_options(args)
    if args.column is not None and args.texts is None:
        raise cli_args.UsageError("--column needs --texts")
    warmup_s, warmup_requests = args.warmup
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    plan = Plan(
        concurrency=args.concurrency if args.rate is not None else (args.concurrency or 1),
        rate=args.rate,
        duration=duration,
        requests=args.requests,
        warmup_s=warmup_s,
        warmup_requests=warmup_requests,
        give_up_after=args.give_up_after or None,
    )
    return Setup(
        target=args.target,
        plan=plan,
        rpc=args.rpc,
        items_per_request=args.items_per_request,
        outputs=tuple(args.outputs or ()),
        timeout=args.timeout,
        model=args.model,
        options=options,
    )


async def _run_until_done_or_interrupted(
    setup: Setup,
    texts: Sequence[str],
    samples: list[Sample],
    progress: TextIO | None,
    security: dict[str, Any],
) -> bool:
    """Runs the test; the first Ctrl-C ends it early but still reports. True if it did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def interrupted() -> None:
        stop.set()
        # A second Ctrl-C gets Python's default: KeyboardInterrupt, no report.
        loop.remove_signal_handler(signal.SIGINT)

    # Without signal handlers here (Windows, or not the main thread), Ctrl-C just aborts.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        await load_test(setup, texts, samples=samples, stop=stop, progress=progress, **security)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
    return stop.is_set()


def run(args: argparse.Namespace) -> int:
    """Runs the load test the arguments describe and prints its report.

    Exit status 0 when at least one request succeeded, 1 when none did (or the server cannot be
    reached), 2 for bad usage or --plot without matplotlib, 130 (as a shell reports SIGINT)
    when Ctrl-C ended it, after its report.
    """
    setup = setup_from_args(args)
    security = cli_args.security(args)
    if args.plot is not None and not have_matplotlib():
        print(PLOT_MISSING, file=sys.stderr)
        return 2
    texts = read_texts(args.texts, args.column) if args.texts is not None else BUILTIN_TEXTS
    samples: list[Sample] = []
    progress = None if args.quiet else sys.stderr
    try:
        interrupted = asyncio.run(
            _run_until_done_or_interrupted(setup, texts, samples, progress, security)
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    report = build_report(samples, setup, stopped_early=interrupted)
    if args.json:
        cli_args.print_json(report, args)
    else:
        sys.stdout.write(format_report(report))
    if args.plot is not None:
        plot_report(samples, report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if report["gave_up"]:
        print(f"error: stopped early: {gave_up_line(report['gave_up'])}", file=sys.stderr)
    elif report["requests"] and not report["ok"]:
        print(f"error: {failed_line(report)}", file=sys.stderr)
    if interrupted:
        return 130
    return 0 if report["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`pipeserve-loadtest ...`: the same as `pipeserve loadtest ...`."""
    return pipeserve_cli.main(["loadtest", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
