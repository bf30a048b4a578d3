"""How worker processes start: forked from a fork server that has torch loaded, or spawned.

A torch worker on a CPU forks from multiprocessing's fork server, which imported torch,
transformers and the torch backend once (`preload.py`): the worker then costs its model's
load, not the ~5 s of CPU those imports take, at start-up and at every respawn. The server
starts the fork server before it loads the models' cards, so those imports overlap the card's.

The others spawn a fresh interpreter: a GPU worker sets CUDA_VISIBLE_DEVICES before torch
loads (the visible GPUs are fixed when it does), and an openvino worker holds no torch.
"""

import multiprocessing
import multiprocessing.forkserver
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from pipeserve.server.schema import DeviceSpec, WorkerSpec
from pipeserve.server.settings import Backend
from pipeserve.server.workers.worker import run_worker

_PRELOAD = ["pipeserve.server.workers.preload"]


def forks(device: DeviceSpec, backend: Backend) -> bool:
    """Whether a worker of `backend` on `device` forks from the fork server."""
    return device.gpu is None and backend is Backend.TORCH


def _fork_server() -> BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)  # read when the fork server starts
    return context


def start_fork_server() -> None:
    """Starts the fork server now, if it is not running, without waiting for its imports."""
    _fork_server()
    multiprocessing.forkserver.ensure_running()


def start_worker_process(spec: WorkerSpec, conn: Connection) -> BaseProcess:
    """A worker process running `run_worker` on `spec`, talking over `conn`."""
    forked = forks(spec.device, spec.backend)
    context = _fork_server() if forked else multiprocessing.get_context("spawn")
    process = context.Process(  # type: ignore[attr-defined]
        target=run_worker,
        args=(spec, conn),
        name=f"pipeserve-worker-{spec.worker_id}",
        daemon=True,
    )
    process.start()
    conn.close()  # so the parent sees EOF when the worker exits
    return process
