"""The progress line on stderr while a run goes."""

import asyncio
from typing import TextIO

from pipeserve.loadtest.generate import LoopClock
from pipeserve.loadtest.plan import (
    Sample,
)


class Progress:
    """The progress line on stderr: elapsed time, and the requests, errors and rate the report
    will count (warmup requests are shown apart: the report leaves them out)."""

    def __init__(self, samples: list[Sample], stream: TextIO) -> None:
        self._samples = samples
        self._stream = stream
        # On a terminal the line rewrites itself; in a log it is one line a second.
        self._tty = stream.isatty()
        self._clock = LoopClock()
        self._start = self._last_time = self._clock.now()
        self._seen = self._measured = self._last_measured = self._errors = self._warmup = 0
        self._measure_start: float | None = None

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.write()

    def write(self, final: bool = False) -> None:
        now = self._clock.now()
        for sample in self._samples[self._seen :]:
            if sample.warmup:
                self._warmup += 1
                continue
            self._measured += 1
            self._errors += not sample.ok
            if self._measure_start is None or sample.scheduled < self._measure_start:
                self._measure_start = sample.scheduled
        self._seen = len(self._samples)
        if final:
            span = now - (self._measure_start if self._measure_start is not None else now)
            rate = self._measured / span if span > 0 else 0.0
        else:
            span = now - self._last_time
            rate = (self._measured - self._last_measured) / span if span > 0 else 0.0
        self._last_time, self._last_measured = now, self._measured
        warmup = f" (+{self._warmup} warmup, not counted)" if self._warmup else ""
        line = (
            f"{'done in' if final else 'after'} {now - self._start:.1f} s: {self._measured} "
            f"requests{warmup}, {self._errors} errors, {rate:.1f} requests/s"
            f"{' overall' if final else ''}"
        )
        if self._tty:
            line = f"\r{line:<79}"
        end = "\n" if final or not self._tty else ""
        print(line, end=end, file=self._stream, flush=True)
