"""A worker process: holds the model on one device and runs the batches it is sent.

This module must not import torch at import time: the worker pins itself to its device
(CUDA_VISIBLE_DEVICES, CPU affinity) first, and only then imports the model code.
"""

import logging
import os
import signal
import time
from multiprocessing.connection import Connection

from pipeserve.server.logs import configure_logging
from pipeserve.server.schema import (
    BatchDone,
    BatchFailed,
    ForwardBatch,
    Stop,
    ToWorker,
    WorkerReady,
    WorkerSpec,
    WorkerStartFailed,
)

log = logging.getLogger(f"pipeserve.worker.{os.getpid()}")


def _pin(spec: WorkerSpec) -> str:
    """Restricts this process to its device; returns the device name for torch."""
    if spec.device.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec.device.gpu)
        return "cuda:0"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.sched_setaffinity(0, spec.device.cpus)
    # Intra-op threads match the cores, so workers sharing a machine do not oversubscribe.
    os.environ["OMP_NUM_THREADS"] = str(len(spec.device.cpus))
    return "cpu"


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a worker process (spawned)."""
    # Ctrl-C and a SIGTERM to the process group reach workers too; the server alone decides
    # when they stop (Stop message, pipe closed, or killed), so it can drain first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(spec.log_level, spec.log_format)
    device = _pin(spec)
    try:
        import torch

        from pipeserve.server.pipeline.forward import ModelRunner

        if spec.device.gpu is None:
            torch.set_num_threads(len(spec.device.cpus))
        runner = ModelRunner.load(
            spec.model,
            spec.revision,
            spec.task,
            spec.dtype,
            spec.quantize,
            device,
            spec.allow_missing_weights,
        )
    except Exception as exc:  # reported to the server as one line, which stops start-up
        conn.send(WorkerStartFailed(spec.worker_id, f"{type(exc).__name__}: {exc}"))
        return
    log.info(
        "worker %d (pid %d) pinned to %s: %s %s ready",
        spec.worker_id,
        os.getpid(),
        spec.device.label,
        type(runner.model).__name__,
        spec.dtype,
    )
    conn.send(
        WorkerReady(
            worker_id=spec.worker_id,
            pid=os.getpid(),
            device=spec.device.label,
            model_class=type(runner.model).__name__,
            outputs=runner.outputs,
            default_outputs=runner.default_outputs,
            token_level=runner.token_level,
        )
    )
    _serve(runner, conn)


def _serve(runner, conn: Connection) -> None:
    while True:
        try:
            message: ToWorker = conn.recv()
        except (EOFError, OSError):  # the server is gone; nothing left to serve
            return
        match message:
            case ForwardBatch():
                start = time.perf_counter()
                try:
                    outputs = runner.forward(
                        message.input_ids,
                        message.attention_mask,
                        message.token_type_ids,
                        message.outputs,
                    )
                except Exception as exc:
                    log.exception("batch %d failed", message.batch_id)
                    conn.send(BatchFailed(message.batch_id, f"{type(exc).__name__}: {exc}"))
                    continue
                elapsed_ms = (time.perf_counter() - start) * 1000
                conn.send(BatchDone(message.batch_id, outputs, elapsed_ms))
            case Stop():
                return
