"""The engine of one model in the test process: the real engine, dispatcher and supervisor, the
real worker loop (`serve_worker`) in threads that stand in for worker processes, a real tiny
checkpoint, real pipes and shared memory, and the real request path (`Infer`) on top. What a
worker process does to the engine when it hangs, dies with a batch or is stopped (SIGSTOP)
holding one, its thread does here on demand: such a test takes milliseconds instead of a
server's start-up."""

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.queue import Request
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard, load_model_card
from pipeserve.server.model.loading import worker_specs
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.requests.infer import Infer
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


class Gate:
    """Open unless a test holds a worker, as SIGSTOP holds a process: a held worker keeps the
    batch it has received, not started, until the gate opens again (or it is killed)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = True

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._changed:
            self._open = False
        try:
            yield
        finally:
            with self._changed:
                self._open = True
                self._changed.notify_all()

    def wait(self, killed: threading.Event) -> None:
        """Returns once the gate is open or `killed` is set."""
        with self._changed:
            self._changed.wait_for(lambda: self._open or killed.is_set())

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


class _Line:
    """A thread worker's end of its pipe, all the worker loop sees of the server. After a kill
    the loop's next receive or send ends it; a held batch is received and never answered, as
    by a stopped process, until the kill; a batch received while the gate is held waits for
    it to open."""

    def __init__(self, conn: Connection, hold_next: threading.Event, gate: Gate) -> None:
        self._conn = conn
        self._hold_next = hold_next
        self._gate = gate
        self._woken, self._waker = Pipe(duplex=False)
        self._killed = threading.Event()
        self.loading = True
        self.received: list[ForwardBatch] = []

    def kill(self) -> None:
        self._killed.set()
        self._waker.send(None)
        self._gate.wake()

    def recv(self) -> Any:
        wait([self._conn, self._woken])
        if self._killed.is_set():
            raise Killed
        message = self._conn.recv()
        if isinstance(message, ForwardBatch):
            self.received.append(message)
            if self._hold_next.is_set():
                self._hold_next.clear()  # the next batch only: a respawned worker serves
                wait([self._woken])
                raise Killed
            self._gate.wait(self._killed)
            if self._killed.is_set():
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

    def __init__(
        self, spec: WorkerSpec, conn: Connection, hold_next: threading.Event, gate: Gate
    ) -> None:
        self._line = _Line(conn, hold_next, gate)
        self.spec = spec
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

    @property
    def received(self) -> list[ForwardBatch]:
        """The batch messages it has received, as the worker loop got them."""
        return self._line.received

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
    the switch that makes it hold the next batch it gets until it is killed, and its gate."""

    def __init__(self, count: int) -> None:
        self.hold_next = [threading.Event() for _ in range(count)]
        self._gates = [Gate() for _ in range(count)]
        self.started: dict[int, ThreadWorker] = {}
        # By worker id, how many of its next starts fail, as a fork the system refuses does.
        self.refused_starts = [0] * count

    def start(self, spec: WorkerSpec, conn: Connection) -> ThreadWorker:
        worker_id = spec.worker_id
        if self.refused_starts[worker_id]:
            self.refused_starts[worker_id] -= 1
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        worker = ThreadWorker(spec, conn, self.hold_next[worker_id], self._gates[worker_id])
        self.started[worker_id] = worker
        return worker

    def paused(self, worker_id: int) -> AbstractContextManager[None]:
        """Holds the worker, as `servers.paused` holds a process: the batches sent to it
        stay in flight, not started, for the block."""
        return self._gates[worker_id].held()


class Harness:
    """An engine of `model` with thread workers, and a way to call it as the request path does,
    or through the request path itself (`infer`: admission, tokenizing, withdrawal)."""

    def __init__(self, engine: Engine, card: ModelCard, workers: Workers, infer: Infer) -> None:
        self.engine = engine
        self.card = card
        self.workers = workers
        self.infer = infer
        self.alive_changed = asyncio.Condition()

    def submit(
        self,
        texts: Sequence[str],
        outputs: tuple[str, ...] = ("logits",),
        traceparent: str | None = None,
    ) -> Request:
        """Queues `texts` as one request, tokenized as the request path does, under the caller's
        `traceparent` if given; returns it."""
        card = self.card
        sequences = card.tokenizer.encode(texts, truncation=True, max_length=card.max_length)
        permit = self.engine.admit(len(sequences))
        return self.engine.submit(sequences, outputs, None, permit, traceparent)

    async def alive(self, count: int) -> None:
        """Returns once `count` workers are ready."""
        async with self.alive_changed:
            await self.alive_changed.wait_for(lambda: self.engine.alive == count)

    async def logits(self, text: str, timeout_s: float | None = None) -> np.ndarray:
        """A Classify's logits of `text` through the request path, tokenized as when the caller
        sets no options; with `timeout_s`, cancelled at its deadline as gRPC cancels a call's
        handler."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        async with asyncio.timeout_at(deadline):
            outputs, _ = await self.infer.run([text], TextOptions(), ("logits",), deadline)
        return outputs["logits"][0]

    @property
    def calls(self) -> int:
        """Calls queued or computing in the engine, however the batcher grouped their items."""
        return len(self.engine._requests)

    def busy(self, worker_id: int) -> bool:
        """Whether the worker holds a batch, as ModelInfo's `busy` says of it."""
        return self.engine.dispatcher.held(worker_id) > 0

    def computed(self, worker_id: int) -> tuple[int, int]:
        """(batches, items) the worker has computed, as ModelInfo counts them."""
        stats = self.engine.dispatcher.stats[worker_id]
        return stats.batches, stats.items


# How long `until` waits for its condition: as servers.wait_until.
_UNTIL_S = 60


async def until(condition: Callable[[], bool]) -> None:
    """Returns once `condition` holds, as servers.wait_until does over RPCs; fails after
    _UNTIL_S seconds. What it looks at (queue, batches in flight, counters) changes in many
    places of the engine with no event for a test to wait on, so it looks every millisecond."""
    async with asyncio.timeout(_UNTIL_S):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


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
    metrics = Metrics()
    harness: Harness

    def alive_changed(_: int) -> None:
        asyncio.get_running_loop().create_task(_notify(harness.alive_changed))

    engine = Engine(
        config,
        card,
        worker_specs(config, card, devices, None, FLAG_TERMS),
        metrics,
        alive_changed,
        start_worker=started.start,
    )
    tokenizing = ThreadPoolExecutor(1, thread_name_prefix="tokenize")
    harness = Harness(engine, card, started, Infer(card, engine, config, tokenizing, metrics))
    await engine.start(on_batcher_failed=lambda: None)
    try:
        yield harness
    finally:
        await engine.stop()
        tokenizing.shutdown()


async def _notify(condition: asyncio.Condition) -> None:
    async with condition:
        condition.notify_all()
