"""The worker processes and the batches in flight on them.

The pool spawns one process per device slot, sends each idle worker one batch at a time,
and owns the futures of the batches in flight. When a worker dies (or hangs past
forward_timeout_s and is killed), its batch is put back at the front of the queue once;
a second death under the same items fails them with UNAVAILABLE. Dead workers are
respawned with back-off.
"""

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np

from pipeserve.server.engine.cost import BatchCost
from pipeserve.server.engine.queue import Entry, Queue
from pipeserve.server.errors import ModelFailed, ModelLoadError, Unavailable
from pipeserve.server.metrics import Metrics
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    ForwardBatch,
    FromWorker,
    Stop,
    WorkerReady,
    WorkerSpec,
    WorkerStartFailed,
)
from pipeserve.server.workers.worker import run_worker

log = logging.getLogger("pipeserve.pool")

_MAX_ATTEMPTS = 2
_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)
_HEALTHY_AFTER_S = 60.0


@dataclass(frozen=True)
class ItemOutput:
    """One item's outputs (token axes cut to its length) and where its time went."""

    outputs: dict[str, np.ndarray]
    queue_ms: float
    forward_ms: float


@dataclass(eq=False)
class _InFlight:
    batch_id: int
    entries: list[Entry]
    lengths: list[int]
    padded_tokens: int
    timer: asyncio.TimerHandle


@dataclass(eq=False)
class WorkerHandle:
    spec: WorkerSpec
    process: BaseProcess
    conn: Connection
    ready: WorkerReady | None = None
    batch: _InFlight | None = None
    started_at: float = field(default_factory=time.monotonic)
    # Set once its exit has been handled; nothing sent to it after that gets an answer.
    exited: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid or 0


@dataclass
class WorkerStats:
    """Counters of one worker slot, kept across its respawns."""

    batches: int = 0
    items: int = 0
    restarts: int = 0
    busy_s: float = 0.0


class WorkerPool:
    def __init__(
        self,
        specs: list[WorkerSpec],
        queue: Queue,
        *,
        pad_token_id: int,
        send_token_type_ids: bool,
        forward_timeout_s: float,
        metrics: Metrics,
        on_alive_change: Callable[[int], None] = lambda alive: None,
    ) -> None:
        self._specs = specs
        self._queue = queue
        self._pad_token_id = pad_token_id
        self._send_token_type_ids = send_token_type_ids
        self._forward_timeout_s = forward_timeout_s
        self._metrics = metrics
        self._on_alive_change = on_alive_change
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, WorkerHandle] = {}
        self._deaths: dict[int, int] = {}
        self.stats = {spec.worker_id: WorkerStats() for spec in specs}
        self._idle: asyncio.Queue[WorkerHandle] = asyncio.Queue()
        self._batch_ids = itertools.count(1)
        self._started = asyncio.Event()
        self._start_failure: str | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model: WorkerReady | None = None
        # (items, forward ms) of the batch that finished last, for the batcher's waits.
        self.last_batch: tuple[int, float] = (0, 0.0)
        self.cost = BatchCost()

    # Lifecycle.

    async def start(self) -> None:
        """Spawns every worker and returns when all are ready; raises ModelLoadError if not."""
        self._loop = asyncio.get_running_loop()
        for spec in self._specs:
            self._spawn(spec)
        await self._started.wait()
        if self._start_failure is not None:
            await self.stop()
            model = self._specs[0].model
            raise ModelLoadError(f"cannot load model {model!r}: {self._start_failure}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Asks every worker to stop after its batch, then kills what is left."""
        self._stopping = True
        workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(Stop())
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, w.process.join, timeout_s) for w in workers)
        )
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    def _spawn(self, spec: WorkerSpec) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=run_worker,
            args=(spec, child),
            name=f"pipeserve-worker-{spec.worker_id}",
            daemon=True,
        )
        process.start()
        child.close()  # so the parent sees EOF when the worker exits
        handle = WorkerHandle(spec, process, parent)
        self._workers[spec.worker_id] = handle
        threading.Thread(
            target=self._read, args=(handle,), name=f"read-worker-{spec.worker_id}", daemon=True
        ).start()

    def _read(self, handle: WorkerHandle) -> None:
        """Reader thread: hands every message, then the worker's exit, to the event loop."""
        assert self._loop is not None
        while True:
            try:
                message: FromWorker = handle.conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._on_message, handle, message)
        handle.process.join()
        self._loop.call_soon_threadsafe(self._on_exit, handle)

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

    # Data path.

    async def idle_worker(self) -> WorkerHandle:
        while True:
            worker = await self._idle.get()
            if self._workers.get(worker.spec.worker_id) is worker and worker.ready:
                return worker

    def release(self, worker: WorkerHandle) -> None:
        """Returns an idle worker that was not given a batch after all."""
        self._idle.put_nowait(worker)

    def dispatch(self, worker: WorkerHandle, entries: list[Entry]) -> None:
        if worker.exited or worker.ready is None:
            # It died while the batcher waited for the batch to fill: the entries never left.
            self._queue.requeue(entries)
            return
        batch_id = next(self._batch_ids)
        outputs = tuple(dict.fromkeys(name for e in entries for name in e.outputs))
        lengths = [e.length for e in entries]
        ids = np.full((len(entries), max(lengths)), self._pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids) if self._send_token_type_ids else None
        for row, entry in enumerate(entries):
            ids[row, : entry.length] = entry.input_ids
            mask[row, : entry.length] = 1
            if types is not None and entry.token_type_ids is not None:
                types[row, : entry.length] = entry.token_type_ids
        try:
            worker.conn.send(ForwardBatch(batch_id, ids, mask, types, outputs))
        except (OSError, ValueError):
            # Dying, its exit not handled yet: the batch never reached it, so no attempt spent.
            log.warning("worker %d gone before batch %d was sent", worker.spec.worker_id, batch_id)
            self._queue.requeue(entries)
            return
        for entry in entries:
            entry.attempts += 1
        self._metrics.observe_batch(len(entries), ids.size)
        assert self._loop is not None
        timer = self._loop.call_later(self._forward_timeout_s, self._on_hung, worker, batch_id)
        worker.batch = _InFlight(batch_id, entries, lengths, ids.size, timer)

    # Events, all on the event loop.

    def _on_message(self, worker: WorkerHandle, message: FromWorker) -> None:
        match message:
            case WorkerReady():
                worker.ready = message
                self._model = self._model or message
                log.info(
                    "worker %d ready: pid %d on %s",
                    worker.spec.worker_id,
                    message.pid,
                    message.device,
                )
                self._idle.put_nowait(worker)
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
            case BatchDone():
                batch = self._finish_batch(worker, message.batch_id)
                if batch is not None:
                    stats = self.stats[worker.spec.worker_id]
                    stats.batches += 1
                    stats.items += len(batch.entries)
                    stats.busy_s += message.forward_ms / 1000
                    self.last_batch = (len(batch.entries), message.forward_ms)
                    self.cost.observe(batch.padded_tokens, message.forward_ms)
                    self._deliver(batch, message)
            case BatchFailed():
                batch = self._finish_batch(worker, message.batch_id)
                if batch is not None:
                    log.error("batch %d failed in the model: %s", message.batch_id, message.reason)
                    error = ModelFailed(
                        "the model failed on this batch (details in the server log)"
                    )
                    for entry in batch.entries:
                        if not entry.future.done():
                            entry.future.set_exception(error)

    def _finish_batch(self, worker: WorkerHandle, batch_id: int) -> _InFlight | None:
        batch = worker.batch
        if batch is None or batch.batch_id != batch_id:
            return None
        batch.timer.cancel()
        worker.batch = None
        self._idle.put_nowait(worker)
        return batch

    def _deliver(self, batch: _InFlight, done: BatchDone) -> None:
        token_level = self.model.token_level
        for row, (entry, length) in enumerate(zip(batch.entries, batch.lengths, strict=True)):
            if entry.future.done():
                continue
            outputs = {
                name: done.outputs[name][row, :length]
                if name in token_level
                else done.outputs[name][row]
                for name in entry.outputs
            }
            entry.future.set_result(ItemOutput(outputs, entry.queue_ms, done.forward_ms))

    def _on_hung(self, worker: WorkerHandle, batch_id: int) -> None:
        if worker.batch is not None and worker.batch.batch_id == batch_id:
            log.error(
                "worker %d hung: batch %d not answered in %.0f s; killing pid %d",
                worker.spec.worker_id,
                batch_id,
                self._forward_timeout_s,
                worker.pid,
            )
            worker.process.kill()

    def _on_exit(self, worker: WorkerHandle) -> None:
        worker_id = worker.spec.worker_id
        was_ready = worker.ready is not None
        worker.ready = None
        worker.exited = True
        if was_ready:
            self._on_alive_change(self.alive)
        if worker.batch is not None:
            worker.batch.timer.cancel()
            self._retry_or_fail(worker.batch.entries, worker_id)
            worker.batch = None
        if self.alive == 0 and not self._stopping:
            # Waiting out a respawn and a model load helps no caller: they can retry elsewhere.
            self._queue.fail_all(Unavailable("no model worker is alive; retry shortly"))
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
        # A worker that served a while before dying starts its back-off afresh.
        if time.monotonic() - worker.started_at > _HEALTHY_AFTER_S:
            self._deaths[worker_id] = 0
        deaths = self._deaths[worker_id] = self._deaths.get(worker_id, 0) + 1
        delay = _BACKOFF_S[min(deaths, len(_BACKOFF_S)) - 1]
        log.error(
            "worker %d (pid %d) died with exit code %s; respawning in %.1f s",
            worker_id,
            worker.pid,
            worker.process.exitcode,
            delay,
        )
        self.stats[worker_id].restarts += 1
        assert self._loop is not None
        self._loop.call_later(delay, self._respawn, worker.spec)

    def _respawn(self, spec: WorkerSpec) -> None:
        if not self._stopping:
            self._spawn(spec)

    def _retry_or_fail(self, entries: list[Entry], worker_id: int) -> None:
        retry = []
        for entry in entries:
            if entry.future.done():
                continue
            if entry.attempts < _MAX_ATTEMPTS:
                retry.append(entry)
            else:
                entry.future.set_exception(
                    Unavailable(
                        f"worker {worker_id} died while computing this request, "
                        "after a retry on another worker"
                    )
                )
        if retry:
            log.warning("retrying %d items from worker %d", len(retry), worker_id)
            self._queue.requeue(retry)
