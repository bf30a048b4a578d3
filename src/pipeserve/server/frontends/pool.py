"""The front-end processes of the main process (with `--frontends` N > 1): started one by one
on the same port (forked: `launch.py`), and respawned with back-off when one dies, while the
others serve on."""

import asyncio
import contextlib
import logging
import multiprocessing
import time
from functools import partial
from multiprocessing.process import BaseProcess

from pipeserve.server.backoff import Backoff
from pipeserve.server.errors import StartupError
from pipeserve.server.exits import when_exited
from pipeserve.server.frontends.hub import Hub
from pipeserve.server.frontends.process import run_frontend
from pipeserve.server.launch import start_process, started
from pipeserve.server.schema import Drain
from pipeserve.server.settings import Settings

log = logging.getLogger("pipeserve.frontends")


class FrontendPool:
    def __init__(self, settings: Settings, count: int, hub: Hub) -> None:
        self._settings = settings
        self._count = count
        self._hub = hub
        self._processes: dict[int, BaseProcess] = {}
        self._conns: dict[int, multiprocessing.connection.Connection] = {}
        self._backoff = Backoff()
        self._started_at: dict[int, float] = {}
        self._stopping = False
        self.port = settings.port

    async def start(self) -> int:
        """Starts every front end, the first on the configured port (0: one picked), the
        others on the port it got; returns the port once all listen."""
        try:
            self.port = await self._start(0)
            await asyncio.gather(*(self._start(i) for i in range(1, self._count)))
        except (OSError, EOFError) as error:
            raise StartupError(f"a front end did not start: {error}") from error
        return self.port

    async def _start(self, index: int) -> int:
        """Starts front end `index`; returns the port it listens on."""
        return await (await self._launch(index))

    async def _launch(self, index: int) -> asyncio.Future[int]:
        """Starts front end `index` (OSError or EOFError: it did not start); returns the future
        of the port it listens on."""
        parent, child = multiprocessing.Pipe()
        args = (self._settings, index, self.port, child)
        name = f"pipeserve-frontend-{index}"
        try:
            process = await started(partial(start_process, run_frontend, args, name, forked=True))
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._processes[index] = process
        self._started_at[index] = time.monotonic()
        self._conns[index] = parent
        listening = self._hub.attach(index, parent)
        when_exited(process).add_done_callback(lambda _: self._on_exit(index, process))
        return listening

    def _on_exit(self, index: int, process: BaseProcess) -> None:
        if self._stopping or self._processes.get(index) is not process:
            return
        delay = self._respawn_later(index, time.monotonic() - self._started_at[index])
        log.error(
            "front end %d (pid %s) died with exit code %s; respawning in %.1f s",
            index,
            process.pid,
            process.exitcode,
            delay,
        )

    def _respawn_later(self, index: int, lived_s: float) -> float:
        return self._backoff.respawn_later(index, lived_s, lambda: self._respawn(index))

    async def _respawn(self, index: int) -> None:
        if self._stopping:
            return
        try:
            listening = await self._launch(index)
        except (OSError, EOFError) as error:
            delay = self._respawn_later(index, 0.0)
            log.error(
                "front end %d did not start (%s); trying again in %.1f s", index, error, delay
            )
            return
        with contextlib.suppress(EOFError):  # it died before it listened: respawned as it exits
            await listening

    async def drain(self, timeout_s: float) -> None:
        """Tells every front end to drain (within the shutdown grace), and waits up to
        `timeout_s` for them to exit; those left are killed."""
        if self._stopping:
            return
        self._stopping = True
        for conn in self._conns.values():
            with contextlib.suppress(OSError, ValueError):
                conn.send(Drain())
        loop = asyncio.get_running_loop()
        processes = list(self._processes.values())
        await asyncio.gather(*(loop.run_in_executor(None, p.join, timeout_s) for p in processes))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
