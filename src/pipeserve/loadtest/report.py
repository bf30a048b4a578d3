"""A run's samples -> its report (JSON-ready) and the report as text; pure."""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeserve.loadtest.plan import (
    Sample,
    Setup,
    hopeless,
)
from pipeserve.loadtest.stats import Summary, summarize
from pipeserve.wire import STAGES


def _ms(seconds: Iterable[float]) -> Summary:
    return summarize(1000.0 * value for value in seconds)


def build_report(
    samples: Sequence[Sample], setup: Setup, *, stopped_early: bool = False
) -> dict[str, Any]:
    """The JSON-ready report of a run. Warmup samples are left out of every figure.

    `latency_ms` covers OK responses only (fast refusals would flatter it); `error_latency_ms`
    the others. `requests_per_s` counts every answered request, `items_per_s` the items of OK
    ones. `send_lag_ms` (open loop only) shows whether the client kept to its schedule.
    `gave_up` holds the failure that ended a hopeless run (see plan.hopeless), else None.
    """
    after = setup.plan.give_up_after
    hopeless_outcome = hopeless(samples, after)
    gave_up = (
        None
        if hopeless_outcome is None
        else {"after": after, "code": hopeless_outcome.code, "details": hopeless_outcome.details}
    )
    measured = [sample for sample in samples if not sample.warmup]
    ok = [sample for sample in measured if sample.ok]
    failed = [sample for sample in measured if not sample.ok]
    # From the first measured request's due time to the last answer: in-flight time counts.
    elapsed = (
        max(s.done for s in measured) - min(s.scheduled for s in measured) if measured else 0.0
    )
    items = sum(sample.outcome.items for sample in ok)
    codes = Counter(sample.outcome.code for sample in measured)
    # One message per failing code: a run that fails wholesale should say why.
    examples: dict[str, str] = {}
    for sample in failed:
        examples.setdefault(sample.outcome.code, sample.outcome.details)
    stages = {
        stage: summarize(s.outcome.stages[stage] for s in ok if stage in s.outcome.stages)
        for stage in STAGES
    }
    return {
        "target": setup.target,
        "rpc": setup.rpc,
        "items_per_request": setup.items_per_request,
        "outputs": list(setup.outputs),
        "model": setup.model,
        "options": {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in setup.options.items()
        },
        "timeout_s": setup.timeout,
        "load": setup.plan.to_dict(),
        "stopped_early": stopped_early or gave_up is not None,
        "gave_up": gave_up,
        "warmup_completed": len(samples) - len(measured),
        "elapsed_s": round(elapsed, 3),
        "requests": len(measured),
        "ok": len(ok),
        "errors": len(failed),
        "items": items,
        "requests_per_s": round(len(measured) / elapsed, 2) if elapsed > 0 else 0.0,
        "items_per_s": round(items / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": _ms(s.latency for s in ok).to_dict(),
        "error_latency_ms": _ms(s.latency for s in failed).to_dict(),
        "send_lag_ms": _ms(s.lag for s in measured).to_dict() if setup.plan.rate else None,
        # OK first, then the most frequent codes.
        "status_codes": dict(sorted(codes.items(), key=lambda kv: (kv[0] != "OK", -kv[1]))),
        "error_examples": examples,
        # Only the stages the RPC runs (Tokenize: tokenize alone; Forward: no postprocess).
        "stages_ms": {name: s.to_dict() for name, s in stages.items() if s.count},
    }


def describe_load(report: Mapping[str, Any]) -> str:
    """One line for a report's load model, e.g. 'closed loop, 4 callers back to back'."""
    load = report["load"]
    if load["model"] == "closed":
        callers = load["concurrency"]
        return f"closed loop, {callers} caller{'s' if callers != 1 else ''} back to back"
    cap = load["concurrency"]
    limit = f"at most {cap} in flight" if cap else "no limit in flight"
    return f"open loop, {load['rate']:g} requests/s scheduled, {limit}"


_LATENCY_COLUMNS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
_STAGE_COLUMNS = ("mean", "p50", "p99")
_LAG_COLUMNS = ("p50", "p99", "max")


def _header(columns: Sequence[str], indent: str = "  ") -> str:
    return indent + "".join(f"{column:>10}" for column in columns)


def _row(values: Mapping[str, Any], columns: Sequence[str], indent: str = "  ") -> str:
    return indent + "".join(
        f"{'-' if values[c] is None else format(values[c], '.2f'):>10}" for c in columns
    )


def gave_up_line(gave_up: Mapping[str, Any]) -> str:
    """Why a hopeless run stopped, in one line."""
    return (
        f"the first {gave_up['after']} requests all failed with {gave_up['code']}: "
        f"{gave_up['details'] or '(no details)'}"
    )


def failed_line(report: Mapping[str, Any]) -> str:
    """Why a run none of whose requests succeeded failed, in one line: each code, its count and
    an example of its details."""
    codes = (
        f"{code} ({count}): {report['error_examples'].get(code) or '(no details)'}"
        for code, count in report["status_codes"].items()
    )
    return f"none of {report['requests']} requests succeeded: {'; '.join(codes)}"


def format_report(report: Mapping[str, Any]) -> str:
    """The human-readable report, ghz style; ends with a newline."""
    items = report["items_per_request"]
    rpc = f"{report['rpc']}, {items} item{'s' if items != 1 else ''} per request"
    if report["outputs"]:
        rpc += f", outputs {','.join(report['outputs'])}"
    for name, value in report["options"].items():
        rpc += f", {name} {','.join(value) if isinstance(value, list) else value}"
    if report["model"]:
        rpc += f", model {report['model']}"
    counted = f"{report['requests']} in {report['elapsed_s']:.2f} s"
    if report["warmup_completed"]:
        counted += f" (+{report['warmup_completed']} warmup, not counted)"
    if report["stopped_early"]:
        counted += " - stopped early"
    lines = [
        "Summary:",
        f"  Target:      {report['target']}",
        f"  RPC:         {rpc}",
        f"  Load:        {describe_load(report)}",
        f"  Requests:    {counted}",
        f"  Requests/s:  {report['requests_per_s']:.2f}",
        f"  Items/s:     {report['items_per_s']:.2f}  (items of OK responses)",
    ]
    if report["gave_up"]:
        lines.append(f"  Gave up:     {gave_up_line(report['gave_up'])}")
    lines += [
        "",
        f"Latency (ms, {report['ok']} OK responses):",
        _header(_LATENCY_COLUMNS),
        _row(report["latency_ms"], _LATENCY_COLUMNS),
    ]
    if report["errors"]:
        lines += [
            f"Error latency (ms, {report['errors']} failed requests):",
            _row(report["error_latency_ms"], _LATENCY_COLUMNS),
        ]
    if report["send_lag_ms"] is not None:
        lines += [
            "Send lag behind schedule (ms, part of latency; large means the client fell behind):",
            _header(_LAG_COLUMNS),
            _row(report["send_lag_ms"], _LAG_COLUMNS),
        ]
    lines += ["", "Status codes:"]
    for code, count in report["status_codes"].items():
        lines.append(f"  {code:<22}{count:>8}")
        if report["error_examples"].get(code):
            example = report["error_examples"][code]
            lines.append(f"    e.g. {example if len(example) <= 90 else example[:87] + '...'}")
    if not report["status_codes"]:
        lines.append("  (no requests)")
    lines.append("")
    if report["stages_ms"]:
        lines += [
            "Server stage times (ms, from each response's timings):",
            _header(_STAGE_COLUMNS, indent=" " * 12),
        ]
        lines += [
            f"  {stage:<10}" + _row(values, _STAGE_COLUMNS, "")
            for stage, values in report["stages_ms"].items()
        ]
    else:
        lines.append("Server stage times: not reported for this RPC")
    return "\n".join(lines) + "\n"
