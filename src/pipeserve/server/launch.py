"""How the server's child processes start: forked from a fork server that has torch loaded, or
spawned.

Front ends, and torch workers on a CPU, fork from multiprocessing's fork server, which
imported torch, transformers and the torch backend once (`preload.py`): such a process then
costs what it loads itself (a model, a tokenizer), not the ~5 s of CPU those imports take, at
start-up and at every respawn. The server starts the fork server before it loads the models'
cards, so those imports overlap the cards'.

The other workers spawn a fresh interpreter: a GPU worker sets CUDA_VISIBLE_DEVICES before
torch loads (the visible GPUs are fixed when it does), and an openvino worker holds no torch.

A forked process is the fork server's child, not the server's, and multiprocessing watches it
through the fork server's pipe, which also reads as "ended" if the fork server dies (the OOM
killer, a stray kill) while its children live on: every front end would look dead and be
started twice. So the server watches each forked process itself, through a pidfd.
"""

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import forkserver, popen_forkserver, util
from multiprocessing.connection import wait
from multiprocessing.context import ForkServerProcess
from multiprocessing.process import BaseProcess

from pipeserve.server.schema import DeviceSpec
from pipeserve.server.settings import Backend

_PRELOAD = ["pipeserve.server.preload"]


def forks_worker(device: DeviceSpec, backend: Backend) -> bool:
    """Whether a worker of `backend` on `device` forks from the fork server."""
    return device.gpu is None and backend is Backend.TORCH


def _preload() -> None:
    forkserver.set_forkserver_preload(_PRELOAD)  # read when the fork server starts


def start_fork_server() -> None:
    """Starts the fork server now, if it is not running, without waiting for its imports. It
    keeps the environment of this moment for every process it forks."""
    _preload()
    forkserver.ensure_running()


class _WatchedPopen(popen_forkserver.Popen):
    """A forked process whose sentinel is a pidfd, readable once the process itself has ended;
    its exit code still comes from the fork server, which reaps it (255 if that died too)."""

    def _launch(self, process_obj) -> None:
        super()._launch(process_obj)
        self._status = self.sentinel
        try:
            self.sentinel = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            # It has ended already, or there are no pidfds here (Linux before 5.3, not
            # Linux): the fork server's pipe tells, as in multiprocessing's own watch.
            return
        util.Finalize(self, os.close, (self.sentinel,))

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                self.returncode = forkserver.read_signed(self._status)
            except (OSError, EOFError):  # the fork server is gone: the code went with it
                self.returncode = 255
        return self.returncode


class _ForkedProcess(ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _WatchedPopen(process_obj)


def start_process(target: Callable, args: tuple, name: str, *, forked: bool) -> BaseProcess:
    """A daemon process running `target(*args)`, forked from the fork server or spawned."""
    if forked:
        _preload()
        process: BaseProcess = _ForkedProcess(target=target, args=args, name=name, daemon=True)
    else:
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=target, args=args, name=name, daemon=True)  # type: ignore[attr-defined]
    process.start()
    return process


# Processes start here, one at a time, off the event loop: a forked start waits for the fork
# server's answer, which a fork server just started (at boot, or anew after one died) gives
# only once its imports are done, seconds later.
_starts = ThreadPoolExecutor(1, thread_name_prefix="pipeserve-start")


async def started(start: Callable[[], BaseProcess]) -> BaseProcess:
    """The process that `start` starts, started on the thread that starts processes."""
    return await asyncio.get_running_loop().run_in_executor(_starts, start)
