"""How the server's child processes start: forked from a fork server that has torch loaded, or
spawned.

Front ends, and torch workers on a CPU, fork from multiprocessing's fork server, which
imported torch, transformers and the torch backend once (`preload.py`): such a process then
costs what it loads itself (a model, a tokenizer), not the ~5 s of CPU those imports take, at
start-up and at every respawn. The server starts the fork server before it loads the models'
cards, so those imports overlap the cards'.

The other workers spawn a fresh interpreter: a GPU worker sets CUDA_VISIBLE_DEVICES before
torch loads (the visible GPUs are fixed when it does), and an openvino worker holds no torch.
"""

import multiprocessing
import multiprocessing.forkserver
from collections.abc import Callable
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from pipeserve.server.schema import DeviceSpec
from pipeserve.server.settings import Backend

_PRELOAD = ["pipeserve.server.preload"]


def forks_worker(device: DeviceSpec, backend: Backend) -> bool:
    """Whether a worker of `backend` on `device` forks from the fork server."""
    return device.gpu is None and backend is Backend.TORCH


def _fork_server() -> BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)  # read when the fork server starts
    return context


def start_fork_server() -> None:
    """Starts the fork server now, if it is not running, without waiting for its imports. It
    keeps the environment of this moment for every process it forks."""
    _fork_server()
    multiprocessing.forkserver.ensure_running()


def start_process(target: Callable, args: tuple, name: str, *, forked: bool) -> BaseProcess:
    """A daemon process running `target(*args)`, forked from the fork server or spawned."""
    context = _fork_server() if forked else multiprocessing.get_context("spawn")
    process = context.Process(target=target, args=args, name=name, daemon=True)  # type: ignore[attr-defined]
    process.start()
    return process
