"""A front-end process (with `--frontends` N > 1): the gRPC edge on the shared port
(SO_REUSEPORT), serving the models whose engines run in the main process, over a pipe.

It learns the served models from the main process, first all at once (Welcome, before it
listens), then one by one as they are loaded and unloaded; it loads each one's card (config
and tokenizer) itself, and answers once it routes calls to it. Signals go to the main process
alone: it tells each front end to drain (Drain message), so that calls in flight finish before
the workers stop.
"""

import asyncio
import contextlib
import logging
import signal
from multiprocessing.connection import Connection

from pipeserve.server import tracing
from pipeserve.server.edge.server import Edge
from pipeserve.server.errors import Unavailable
from pipeserve.server.frontends.remote import EngineLink, RemoteRegistry
from pipeserve.server.logs import configure_logging
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import load_model_card
from pipeserve.server.quick_exit import exit_now
from pipeserve.server.schema import (
    Drain,
    FromEngine,
    FrontendsListening,
    Listening,
    ModelAdded,
    ModelGone,
    ModelRemoved,
    ModelServed,
    SharedDevices,
    Welcome,
)
from pipeserve.server.settings import Settings

log = logging.getLogger("pipeserve.frontend")


def run_frontend(settings: Settings, index: int, port: int, conn: Connection) -> None:
    """Entry point of a front-end process (forked from the fork server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format, transformers=False)
    if settings.tracing:
        tracing.start("frontend")
    try:
        asyncio.run(_serve(settings, index, port, conn))
    finally:
        tracing.stop()
    exit_now(0)


async def _serve(settings: Settings, index: int, port: int, conn: Connection) -> None:
    # Built on the running loop: the gRPC server binds to it.
    await Frontend(settings, conn).serve(index, port)


class Frontend:
    def __init__(self, settings: Settings, conn: Connection) -> None:
        self._settings = settings
        self._edge = Edge(
            settings,
            Metrics(default_model=settings.default_name, batches=False),
            reuse_port=True,
            quiet=True,
        )
        self._drained = asyncio.Event()
        # What changes the served models, handled one at a time in arrival order.
        self._inbox: asyncio.Queue[FromEngine] = asyncio.Queue()
        self._link = EngineLink(
            conn,
            on_message=self._receive,
            on_alive_change=self._edge.model_alive,
            on_gone=self._drained.set,
        )
        if settings.admin_token_file is not None:
            self._edge.add_admin(RemoteRegistry(self._link))

    async def serve(self, index: int, port: int) -> None:
        edge = self._edge
        self._link.start()
        welcome = await self._first_message()
        if welcome is None:  # the main process is gone, or stopping already
            return
        edge.expect(welcome.loading)
        for added in welcome.models:
            await self._add(added)
        edge.devices_shared(welcome.tables)
        await edge.set_every_frontend(False)  # until the main process says all listen
        try:
            bound = await edge.start(port)
            for model in edge.models:
                await edge.set_alive(model.name, model.engine.alive)
            self._link.send(Listening(bound))
            log.info("front end %d serving on port %d", index, bound)
            changes = asyncio.create_task(self._follow())
            changes.add_done_callback(self._on_follow_end)
            await self._drained.wait()
            changes.cancel()
            await edge.drain(self._settings.shutdown_grace_s)
        finally:
            await edge.close()

    async def _first_message(self) -> Welcome | None:
        """The main process's Welcome, or None if it is gone or drains us first."""
        welcome = asyncio.ensure_future(self._inbox.get())
        drained = asyncio.ensure_future(self._drained.wait())
        await asyncio.wait({welcome, drained}, return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()
        if not welcome.done():
            welcome.cancel()
            return None
        message = welcome.result()
        assert isinstance(message, Welcome)  # the main process sends it first
        return message

    def _on_follow_end(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Serving models other than the main process's would answer wrongly: exit, and
            # the main process respawns this front end, which learns them all again.
            log.error("front end cannot follow the served models", exc_info=task.exception())
            self._drained.set()

    def _receive(self, message: FromEngine) -> None:
        if isinstance(message, Drain):
            self._drained.set()
        else:
            self._inbox.put_nowait(message)

    async def _follow(self) -> None:
        """Follows the main process's changes to the served models."""
        edge = self._edge
        while True:
            message = await self._inbox.get()
            match message:
                case ModelAdded():
                    await self._add(message)
                    self._answer(ModelServed(message.settings.model_name))
                case ModelRemoved():
                    await edge.model_removed(message.name)
                    self._answer(ModelGone(message.name))
                case SharedDevices():
                    edge.devices_shared(message.tables)
                case FrontendsListening():
                    await edge.set_every_frontend(message.every)

    async def _add(self, added: ModelAdded) -> None:
        settings = added.settings
        loop = asyncio.get_running_loop()
        card = await loop.run_in_executor(None, load_model_card, settings)
        engine = self._link.engine(settings.model_name)
        self._edge.add_model(settings, card, engine)
        await self._edge.set_alive(settings.model_name, engine.alive)

    def _answer(self, message: ModelServed | ModelGone) -> None:
        with contextlib.suppress(Unavailable):  # the main process is gone: we drain anyway
            self._link.send(message)
