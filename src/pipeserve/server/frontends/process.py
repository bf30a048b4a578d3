"""A front-end process (with `--frontends` N > 1): the gRPC edge on the shared port
(SO_REUSEPORT), talking to the engine in the main process over a pipe.

Signals go to the main process alone: it tells each front end to drain (Drain message), so
that calls in flight finish before the workers stop.
"""

import asyncio
import logging
import signal
from multiprocessing.connection import Connection

from pipeserve.server.edge.server import Edge
from pipeserve.server.frontends.remote import RemoteEngine
from pipeserve.server.logs import configure_logging
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import load_model_card
from pipeserve.server.schema import Listening
from pipeserve.server.settings import Settings

log = logging.getLogger("pipeserve.frontend")


def run_frontend(settings: Settings, index: int, port: int, conn: Connection) -> None:
    """Entry point of a front-end process (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve(settings, index, port, conn))


async def _serve(settings: Settings, index: int, port: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    card = await loop.run_in_executor(None, load_model_card, settings)
    drained = asyncio.Event()
    edge: Edge | None = None

    def on_alive_change(alive: int) -> None:
        if edge is not None:
            edge.mark_alive(settings.model_name, alive)

    engine = RemoteEngine(
        conn, settings.max_queued_items, on_alive_change=on_alive_change, on_drain=drained.set
    )
    metrics = Metrics(default_model=settings.default_name, batches=False)
    edge = Edge(settings, metrics, reuse_port=True, quiet=True)
    edge.add_model(settings, card, engine)
    bound = await edge.start(port)
    await edge.set_alive(settings.model_name, engine.alive)
    engine.start()
    engine.send(Listening(bound))
    log.info("front end %d serving on port %d", index, bound)
    try:
        await drained.wait()
        await edge.drain(settings.shutdown_grace_s)
    finally:
        await edge.close()
