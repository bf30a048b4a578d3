"""Latency over time and a latency histogram, with matplotlib (optional)."""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeserve.loadtest.plan import (
    Sample,
)
from pipeserve.loadtest.report import describe_load

PLOT_MISSING = "error: --plot needs matplotlib: pip install 'pipeserve[plot]'"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_report(samples: Sequence[Sample], report: Mapping[str, Any], path: str | Path) -> None:
    """Writes latency over time (top) and a latency histogram (bottom) to `path` (PNG, SVG...)."""
    # A bare Figure, not pyplot: no display, no global state; savefig picks Agg for PNG.
    from matplotlib.figure import Figure

    start = min((s.scheduled for s in samples), default=0.0)
    measured = [s for s in samples if not s.warmup]
    figure = Figure(figsize=(10, 7), layout="constrained")
    over_time, histogram = figure.subplots(2, 1)
    groups = (
        ("warmup", [s for s in samples if s.warmup], "tab:gray", "."),
        ("OK", [s for s in measured if s.ok], "tab:blue", "."),
        ("error", [s for s in measured if not s.ok], "tab:red", "x"),
    )
    for label, group, color, marker in groups:
        if group:
            over_time.scatter(
                [s.scheduled - start for s in group],
                [1000 * s.latency for s in group],
                s=6,
                color=color,
                marker=marker,
                label=f"{label} ({len(group)})",
            )
    latency = report["latency_ms"]
    if latency["p99"] is not None:
        over_time.axhline(latency["p99"], color="tab:orange", linestyle="--", label="p99")
    over_time.set(
        xlabel="scheduled send time (s since start)",
        ylabel="latency (ms)",
        title="Latency over time",
    )
    over_time.legend(loc="upper right")
    ok_ms = [1000 * s.latency for s in measured if s.ok]
    if ok_ms:
        histogram.hist(ok_ms, bins=max(10, min(100, int(math.sqrt(len(ok_ms))))), color="tab:blue")
        for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            histogram.axvline(latency[name], color="black", linestyle=style, label=name)
        histogram.legend(loc="upper right")
    histogram.set(xlabel="latency (ms)", ylabel="requests", title="Latency of OK responses")
    figure.suptitle(
        f"{report['rpc']} on {report['target']}: {describe_load(report)}; "
        f"{report['requests_per_s']:.1f} requests/s"
    )
    figure.savefig(path, dpi=100)
