"""Supervision of the worker processes: start, ready, exit, respawn with back-off.

One process per device slot, started as `launch.py` says. Each worker slot owns shared input slots
(`shm.py`) that outlive its processes. Messages are read on the event loop as the pipe becomes
readable (no reader threads) and handed to a `WorkerEvents` listener, the dispatcher, which
alone knows what is in flight. Dead workers are respawned with back-off; a worker that served
a while before dying starts its back-off afresh.
"""

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from pipeserve.server.backoff import Backoff
from pipeserve.server.errors import ModelLoadError, Unavailable
from pipeserve.server.exits import when_exited
from pipeserve.server.launch import forks_worker, start_process, started
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    BatchSkipped,
    FromWorker,
    Stop,
    ToWorker,
    WorkerReady,
    WorkerSpec,
    WorkerStartFailed,
)
from pipeserve.server.workers.shm import InputSlots
from pipeserve.server.workers.worker import run_worker

log = logging.getLogger("pipeserve.workers")

BatchOutcome = BatchDone | BatchFailed | BatchSkipped


@dataclass(eq=False)
class WorkerHandle:
    spec: WorkerSpec
    process: BaseProcess
    conn: Connection
    slots: InputSlots
    ready: WorkerReady | None = None
    started_at: float = field(default_factory=time.monotonic)
    # Set once its exit has been handled; nothing sent to it after that gets an answer.
    exited: bool = False

    @property
    def worker_id(self) -> int:
        return self.spec.worker_id

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def send(self, message: ToWorker) -> bool:
        """Sends `message`; False when the worker is gone (its exit may not be handled yet)."""
        if self.exited:
            return False
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        self.process.kill()


class WorkerEvents(Protocol):
    """What the supervisor tells the dispatcher, all on the event loop."""

    def on_ready(self, worker: WorkerHandle) -> None: ...

    def on_batch(self, worker: WorkerHandle, message: BatchOutcome) -> None: ...

    def on_exit(self, worker: WorkerHandle, alive: int) -> None: ...


# Starts a worker on `spec` that talks over `conn`, and returns its process, or what stands for
# one (pid, exitcode, is_alive, join, kill): the seam where tests run the worker loop in a thread.
WorkerStarter = Callable[[WorkerSpec, Connection], BaseProcess]


def start_worker_process(spec: WorkerSpec, conn: Connection) -> BaseProcess:
    """A worker process running `run_worker` on `spec`, talking over `conn`."""
    forked = forks_worker(spec.device, spec.backend)
    name = f"pipeserve-worker-{spec.worker_id}"
    process = start_process(run_worker, (spec, conn), name, forked=forked)
    conn.close()  # so the parent sees EOF when the worker exits
    return process


class Supervisor:
    def __init__(
        self,
        specs: list[WorkerSpec],
        events: WorkerEvents,
        *,
        depth: int,
        slot_capacity: int,
        on_alive_change: Callable[[int], None] = lambda alive: None,
        start_worker: WorkerStarter = start_worker_process,
    ) -> None:
        self._events = events
        self._on_alive_change = on_alive_change
        self._start_worker = start_worker
        self._slots = {s.worker_id: InputSlots.create(depth, slot_capacity) for s in specs}
        self._specs = [replace(s, slots=self._slots[s.worker_id].spec) for s in specs]
        self._workers: dict[int, WorkerHandle] = {}
        self._backoff = Backoff()
        self.restarts = {spec.worker_id: 0 for spec in specs}
        self._started = asyncio.Event()
        self._start_failure: str | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model: WorkerReady | None = None

    # Lifecycle.

    async def start(self) -> None:
        """Starts every worker and returns when all are ready; raises ModelLoadError if not."""
        self._loop = asyncio.get_running_loop()
        for spec in self._specs:
            await self._spawn(spec)
        await self._started.wait()
        if self._start_failure is not None:
            await self.stop()
            model = self._specs[0].model
            raise ModelLoadError(f"cannot load model {model!r}: {self._start_failure}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Asks every worker to stop after its batch, then kills what is left."""
        if self._stopping:
            return
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            worker.send(Stop())
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, w.process.join, timeout_s) for w in workers)
        )
        for worker in workers:
            if worker.process.is_alive():
                worker.kill()
                worker.process.join()
        for slots in self._slots.values():
            slots.close(unlink=True)

    async def _spawn(self, spec: WorkerSpec) -> None:
        assert self._loop is not None
        parent, child = multiprocessing.Pipe()
        try:
            process = await started(partial(self._start_worker, spec, child))
        except (OSError, EOFError) as error:  # no fork left, or the fork server died meanwhile
            parent.close()
            child.close()
            self._not_started(spec, f"worker {spec.worker_id} did not start: {error}")
            return
        handle = WorkerHandle(spec, process, parent, self._slots[spec.worker_id])
        self._workers[spec.worker_id] = handle
        self._loop.add_reader(parent.fileno(), self._on_readable, handle)
        if self._stopping:  # stopped while it started: stop() did not see it
            handle.send(Stop())

    def _on_readable(self, handle: WorkerHandle) -> None:
        """Hands the message that has arrived to the listener; at EOF, reaps the worker.

        One message a call: the reader is level-triggered, so the loop calls again while more
        are waiting, and Connection.poll would build a selector for every message."""
        assert self._loop is not None
        try:
            self._on_message(handle, handle.conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(handle.conn.fileno())
            when_exited(handle.process).add_done_callback(lambda _: self._on_exit(handle))

    # Queries.

    @property
    def alive(self) -> int:
        return sum(1 for w in self._workers.values() if w.ready is not None)

    @property
    def workers(self) -> list[WorkerHandle]:
        return [self._workers[spec.worker_id] for spec in self._specs]

    @property
    def model(self) -> WorkerReady:
        """What the first ready worker reported of the model (every worker loads the same)."""
        if self._model is None:
            raise Unavailable("the model is still loading; retry shortly")
        return self._model

    # Events, all on the event loop.

    def _on_message(self, worker: WorkerHandle, message: FromWorker) -> None:
        match message:
            case WorkerReady():
                worker.ready = message
                self._model = self._model or message
                log.info(
                    "worker %d ready: pid %d on %s", worker.worker_id, message.pid, message.device
                )
                self._events.on_ready(worker)
                self._on_alive_change(self.alive)
                if not self._started.is_set() and self.alive == len(self._specs):
                    self._started.set()
            case WorkerStartFailed():
                log.error(
                    "worker %d failed to load the model: %s", message.worker_id, message.reason
                )
                if not self._started.is_set():
                    self._start_failure = message.reason
                    self._started.set()
            case BatchDone() | BatchFailed() | BatchSkipped():
                self._events.on_batch(worker, message)

    def _on_exit(self, worker: WorkerHandle) -> None:
        worker_id = worker.worker_id
        was_ready = worker.ready is not None
        worker.ready = None
        worker.exited = True
        with contextlib.suppress(OSError):
            worker.conn.close()
        if was_ready:
            self._on_alive_change(self.alive)
        self._events.on_exit(worker, self.alive)
        replaced = self._workers.get(worker_id) is not worker
        if self._stopping or replaced or self._start_failure is not None:
            return
        if not self._started.is_set():
            self._start_failure = (
                f"worker {worker_id} exited with code {worker.process.exitcode} "
                "while loading the model"
            )
            self._started.set()
            return
        delay = self._respawn_later(worker.spec, time.monotonic() - worker.started_at)
        log.error(
            "worker %d (pid %d) died with exit code %s; respawning in %.1f s",
            worker_id,
            worker.pid,
            worker.process.exitcode,
            delay,
        )
        self.restarts[worker_id] += 1

    def _not_started(self, spec: WorkerSpec, reason: str) -> None:
        if self._stopping:
            return
        if not self._started.is_set():
            self._start_failure = reason
            self._started.set()
            return
        log.error("%s; trying again in %.1f s", reason, self._respawn_later(spec, 0.0))

    def _respawn_later(self, spec: WorkerSpec, lived_s: float) -> float:
        return self._backoff.respawn_later(spec.worker_id, lived_s, lambda: self._respawn(spec))

    async def _respawn(self, spec: WorkerSpec) -> None:
        if self._stopping:
            return
        slots = self._slots[spec.worker_id]
        if not slots.present():
            try:
                fresh = InputSlots.create(len(slots.spec.names), slots.spec.capacity)
            except OSError as error:
                log.error(
                    "worker %d's input shared memory was removed and cannot be made anew "
                    "(%s); it is not respawned",
                    spec.worker_id,
                    error,
                )
                return
            log.warning(
                "worker %d's input shared memory was removed from outside the server; made it anew",
                spec.worker_id,
            )
            slots.close(unlink=True)
            self._slots[spec.worker_id] = fresh
            spec = replace(spec, slots=fresh.spec)
            self._specs = [spec if s.worker_id == spec.worker_id else s for s in self._specs]
        await self._spawn(spec)
