"""The progress line on stderr while a run goes."""

import asyncio
from typing import TextIO

from pipeserve.loadtest.generate import LoopClock
from pipeserve.loadtest.plan import (
    Sample,
)


class Progress:
    """The progress line on stderr: elapsed time, requests and errors so far, current rate."""

    def __init__(self, samples: list[Sample], stream: TextIO) -> None:
        self._samples = samples
        self._stream = stream
        # On a terminal the line rewrites itself; in a log it is one line a second.
        self._tty = stream.isatty()
        self._clock = LoopClock()
        self._start = self._last_time = self._clock.now()
        self._last_count = self._errors = 0

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.write()

    def write(self, final: bool = False) -> None:
        now, count = self._clock.now(), len(self._samples)
        self._errors += sum(1 for s in self._samples[self._last_count : count] if not s.ok)
        span = (now - self._start) if final else (now - self._last_time)
        done = count if final else count - self._last_count
        rate = done / span if span > 0 else 0.0
        self._last_time, self._last_count = now, count
        warmup = " (warmup)" if count and self._samples[-1].warmup and not final else ""
        line = (
            f"{'done in' if final else 'after'} {now - self._start:.1f} s: {count} requests"
            f"{warmup}, {self._errors} errors, {rate:.1f} requests/s{' overall' if final else ''}"
        )
        if self._tty:
            line = f"\r{line:<79}"
        end = "\n" if final or not self._tty else ""
        print(line, end=end, file=self._stream, flush=True)
