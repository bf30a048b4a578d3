"""A worker process: holds the model on one device and runs the batches it is sent.

This module must not import torch at import time: a spawned worker pins itself to its device
(CUDA_VISIBLE_DEVICES, CPU affinity) first, and only then imports the model code. A worker
forked from the fork server (torch on a CPU, `launch.py`) has torch loaded already, with no
GPU visible; it pins itself to its cores and sets torch's threads when it loads the model.
"""

import logging
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from pipeserve.server import tracing
from pipeserve.server.logs import configure_logging
from pipeserve.server.quick_exit import exit_now
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    BatchSkipped,
    Stop,
    ToWorker,
    WorkerReady,
    WorkerSpec,
    WorkerStartFailed,
)
from pipeserve.server.settings import Backend
from pipeserve.server.workers.buckets import forward_buckets
from pipeserve.server.workers.shm import InputSlots, share

if TYPE_CHECKING:
    from pipeserve.server.backends.runner import ModelRunner

log = logging.getLogger(f"pipeserve.worker.{os.getpid()}")


def pin(spec: WorkerSpec) -> str:
    """Restricts this process to its device; returns the device name for the backend."""
    if spec.device.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec.device.gpu)
        return "cuda:0"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.sched_setaffinity(0, spec.device.cpus)
    # Intra-op threads match the cores, so workers sharing a machine do not oversubscribe (a
    # forked worker's OpenMP has read it already: TorchRunner.load sets torch's threads too).
    os.environ["OMP_NUM_THREADS"] = str(len(spec.device.cpus))
    # Idle OpenMP threads sleep instead of spinning on cores that the front end needs: a
    # small batch otherwise costs several times its compute. An operator's choice stands.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "cpu"


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a worker process (forked or spawned: `launch.py`)."""
    # Ctrl-C and a SIGTERM to the process group reach workers too; the server alone decides
    # when they stop (Stop message, pipe closed, or killed), so it can drain first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(spec.log_level, spec.log_format)
    if spec.tracing:
        tracing.start("worker", tracing.worker_attributes(spec))
    try:
        serve_worker(spec, conn, pin(spec))
    finally:
        tracing.stop()
    exit_now(0)  # told to stop, or the server is gone: no teardown to wait for


def serve_worker(spec: WorkerSpec, conn: Connection, device: str) -> None:
    """Attaches the input slots, loads the model on `device` and serves batches until told to
    stop: all a worker does once its process is set up, and what tests run in a thread."""
    # Attached before anything else, so that a worker never reports ready without them.
    assert spec.slots is not None
    try:
        slots = InputSlots.attach(spec.slots)
    except FileNotFoundError as exc:
        conn.send(
            WorkerStartFailed(spec.worker_id, f"its input shared memory {exc.filename} is gone")
        )
        return
    try:
        _load_and_serve(spec, conn, slots, device)
    finally:
        slots.close(unlink=False)


def load_spec(spec: WorkerSpec, device: str, backend: Backend | None = None) -> "ModelRunner":
    """The model `spec` names, loaded on `device` (pinned) with its backend, or `backend`."""
    from pipeserve.server.backends.runner import load_runner

    return load_runner(
        backend or spec.backend,
        model=spec.model,
        revision=spec.revision,
        task=spec.task,
        dtype=spec.dtype,
        quantize=spec.quantize,
        device=device,
        threads=len(spec.device.cpus) or 1,
        allow_missing_weights=spec.allow_missing_weights,
        terms=spec.terms,
        converted=Path(spec.converted) if spec.converted else None,
        torch_compile=spec.torch_compile,
    )


def _load_and_serve(spec: WorkerSpec, conn: Connection, slots: InputSlots, device: str) -> None:
    try:
        runner = load_spec(spec, device)
    except Exception as exc:  # reported to the server as one line, which stops start-up
        conn.send(WorkerStartFailed(spec.worker_id, f"{type(exc).__name__}: {exc}"))
        return
    log.info(
        "worker %d (pid %d) pinned to %s: %s %s on %s ready",
        spec.worker_id,
        os.getpid(),
        spec.device.label,
        runner.model_class,
        spec.dtype,
        spec.backend,
    )
    conn.send(
        WorkerReady(
            worker_id=spec.worker_id,
            pid=os.getpid(),
            device=spec.device.label,
            model_class=runner.model_class,
            outputs=runner.outputs,
            default_outputs=runner.default_outputs,
            token_level=runner.token_level,
            item_shapes=runner.item_shapes,
            packs=runner.packs,
        )
    )
    _serve(runner, conn, slots)


def _serve(runner, conn: Connection, slots: InputSlots) -> None:
    """The busy loop. The server keeps the next batch waiting in the pipe while this one runs,
    so the loop goes from one forward to the next without a round trip."""
    while True:
        # 1. The next batch, or the order to stop.
        try:
            message: ToWorker = conn.recv()
        except (EOFError, OSError):  # the server is gone; nothing left to serve
            return
        if isinstance(message, Stop):
            return
        expired = message.deadline is not None and time.monotonic() >= message.deadline
        if expired or slots.withdrawn(message.slot):
            conn.send(BatchSkipped(message.batch_id))
            continue
        # 2. Its ids, read in place from the shared slot, run in the calls the server planned.
        start = time.perf_counter()
        ids, types = slots.views(message.slot, len(message.lengths), message.width)
        try:
            with tracing.batch(message):
                outputs = forward_buckets(
                    runner,
                    ids,
                    types if message.has_types else None,
                    message.lengths,
                    message.cuts,
                    message.outputs,
                )
        except Exception as exc:
            log.exception("batch %d failed", message.batch_id)
            conn.send(BatchFailed(message.batch_id, f"{type(exc).__name__}: {exc}"))
            continue
        elapsed_ms = (time.perf_counter() - start) * 1000
        # 3. Its outputs: small ones in the message, large ones in shared memory.
        shared = {output: share(array) for output, array in outputs.items()}
        conn.send(BatchDone(message.batch_id, shared, elapsed_ms))
