"""The engine of one model in the test process: the real engine, dispatcher and supervisor, the
real worker loop (`serve_worker`) in threads that stand in for worker processes, a real tiny
checkpoint, real pipes and shared memory. What a worker process does to the engine when it
hangs, or dies with a batch, its thread does here on demand: such a test takes milliseconds
instead of a server's start-up."""

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.queue import Request
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard, load_model_card
from pipeserve.server.model.loading import worker_specs
from pipeserve.server.schema import DeviceSpec, ForwardBatch, WorkerSpec
from pipeserve.server.settings import Settings
from pipeserve.server.terms import FLAG_TERMS
from pipeserve.server.workers.worker import serve_worker

KILLED = -9  # the exit code of a process that SIGKILL ended


class Killed(Exception):
    """Ends a thread worker's loop, as SIGKILL ends a process."""


# transformers' loading patches classes process-wide while it runs (no_tie_weights and
# no_init_weights swap PreTrainedModel's methods and restore them after), so two loads at once
# in one process can restore each other's patch and leave weight tying off for every later
# load. Processes never share that state; thread workers load one at a time, until their
# first message (ready or failed) says the loading is over.
_LOADING = threading.Lock()


class _Line:
    """A thread worker's end of its pipe, all the worker loop sees of the server. After a kill
    the loop's next receive or send ends it; a held batch is received and never answered, as
    by a stopped process, until the kill."""

    def __init__(self, conn: Connection, hold_next: threading.Event) -> None:
        self._conn = conn
        self._hold_next = hold_next
        self._woken, self._waker = Pipe(duplex=False)
        self._killed = threading.Event()
        self.loading = True

    def kill(self) -> None:
        self._killed.set()
        self._waker.send(None)

    def recv(self) -> Any:
        wait([self._conn, self._woken])
        if self._killed.is_set():
            raise Killed
        message = self._conn.recv()
        if isinstance(message, ForwardBatch) and self._hold_next.is_set():
            self._hold_next.clear()  # the next batch only: a respawned worker serves
            wait([self._woken])
            raise Killed
        return message

    def send(self, message: Any) -> None:
        self.loaded()
        if self._killed.is_set():
            raise Killed
        self._conn.send(message)

    def loaded(self) -> None:
        if self.loading:
            self.loading = False
            _LOADING.release()

    def close(self) -> None:
        for end in (self._conn, self._woken, self._waker):
            end.close()


class ThreadWorker:
    """A worker "process" that is a thread of this one, running the real worker loop: what the
    supervisor uses of a process (pid, sentinel, exitcode, is_alive, join, kill)."""

    def __init__(self, spec: WorkerSpec, conn: Connection, hold_next: threading.Event) -> None:
        self._line = _Line(conn, hold_next)
        self.exitcode: int | None = None
        # A process's sentinel: readable once it has ended (the write end closes as it ends);
        # the read end closes with this object, as a process's does with its Process.
        self._ended_seen, self._ended = Pipe(duplex=False)
        self.sentinel = self._ended_seen.fileno()
        self._thread = threading.Thread(
            target=self._run, args=(spec,), name=f"worker-{spec.worker_id}", daemon=True
        )
        self._thread.start()

    @property
    def pid(self) -> int:
        return os.getpid()

    def _run(self, spec: WorkerSpec) -> None:
        _LOADING.acquire()
        try:
            serve_worker(spec, self._line, "cpu")  # type: ignore[arg-type]
            self.exitcode = 0
        except Killed:
            self.exitcode = KILLED
        finally:
            self._line.loaded()
            # The supervisor sees EOF once the worker's end is closed, as when a process exits.
            self._line.close()
            self._ended.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        self._line.kill()


class Workers:
    """The thread workers an engine starts, by worker id (the latest of each), and by worker id
    the switch that makes it hold the next batch it gets until it is killed."""

    def __init__(self, count: int) -> None:
        self.hold_next = [threading.Event() for _ in range(count)]
        self.started: dict[int, ThreadWorker] = {}

    def start(self, spec: WorkerSpec, conn: Connection) -> ThreadWorker:
        worker = ThreadWorker(spec, conn, self.hold_next[spec.worker_id])
        self.started[spec.worker_id] = worker
        return worker


class Harness:
    """An engine of `model` with thread workers, and a way to call it as the request path does."""

    def __init__(self, engine: Engine, card: ModelCard, workers: Workers) -> None:
        self.engine = engine
        self.card = card
        self.workers = workers
        self.alive_changed = asyncio.Condition()

    def submit(self, texts: Sequence[str], outputs: tuple[str, ...] = ("logits",)) -> Request:
        """Queues `texts` as one request, tokenized as the request path does; returns it."""
        card = self.card
        sequences = card.tokenizer.encode(texts, truncation=True, max_length=card.max_length)
        return self.engine.submit(sequences, outputs, None, self.engine.admit(len(sequences)))

    async def alive(self, count: int) -> None:
        """Returns once `count` workers are ready."""
        async with self.alive_changed:
            await self.alive_changed.wait_for(lambda: self.engine.alive == count)


@asynccontextmanager
async def engine_of(model: Path, workers: int = 1, **settings: Any) -> AsyncIterator[Harness]:
    """An engine of `model` with `settings` (Settings fields) and `workers` thread workers,
    started (every worker ready) for the block and stopped after it."""
    config = Settings(model=(str(model),), **settings)
    card = load_model_card(config)
    # As many cores as this process's torch threads: a worker's loading sets torch's thread
    # count, process-wide, and every later in-process reference must keep computing as before.
    cores = tuple(range(torch.get_num_threads()))
    devices = [DeviceSpec(cpus=cores) for _ in range(workers)]
    started = Workers(workers)
    harness: Harness

    def alive_changed(_: int) -> None:
        asyncio.get_running_loop().create_task(_notify(harness.alive_changed))

    engine = Engine(
        config,
        card,
        worker_specs(config, card, devices, None, FLAG_TERMS),
        Metrics(),
        alive_changed,
        start_worker=started.start,
    )
    harness = Harness(engine, card, started)
    await engine.start(on_batcher_failed=lambda: None)
    try:
        yield harness
    finally:
        await engine.stop()


async def _notify(condition: asyncio.Condition) -> None:
    async with condition:
        condition.notify_all()
