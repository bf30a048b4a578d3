"""Start-up and shutdown: wires settings, model card, engine and front ends together, and runs
until SIGTERM or Ctrl-C.

The port opens first, answering NOT_SERVING (`__main__` has run every check that needs no
model, `preflight.py`); the models' cards, an OpenVINO conversion and the workers load after.
A shutdown has one deadline, the grace: calls drain within it, and the workers and front ends
get what is left of it, and a second, before they are killed.

Every model's engine, and the model registry that loads and unloads them, run in this process.
With one front end (the default on a small host) the gRPC edge shares it too. With
`--frontends N` > 1, N front-end processes serve the port, each passing its requests to the
engines over a pipe (the hub), and the Admin calls they receive to the registry here.
"""

import asyncio
import logging
import os
import shutil
import signal

from pipeserve.server.backends.select import resolve_backend, stop_conversions
from pipeserve.server.edge.server import Edge
from pipeserve.server.engine.registry import ModelRegistry
from pipeserve.server.errors import StartupError
from pipeserve.server.frontends.hub import Hub
from pipeserve.server.frontends.pool import FrontendPool
from pipeserve.server.launch import forks_worker, start_fork_server
from pipeserve.server.metrics import Metrics, frontends_metrics_dir
from pipeserve.server.model.loading import load_card, prepare_backend, worker_specs
from pipeserve.server.schema import DeviceSpec
from pipeserve.server.settings import Settings
from pipeserve.server.terms import start_up_terms
from pipeserve.server.token_files import load_tokens
from pipeserve.server.workers.devices import plan_frontends, plan_models

log = logging.getLogger("pipeserve")


# What the workers and front ends get, beyond the grace, to exit before they are killed: the
# calls were answered or cut when the grace ended, so what is left is each process's exit.
EXIT_S = 1.0


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    per_model = settings.per_model()
    names = [m.model_name for m in per_model]
    plans = plan_models([(m.devices, m.workers_per_device) for m in per_model])
    frontends = plan_frontends(settings.frontends, [d for plan in plans for d in plan])
    settings = settings.model_copy(update={"frontends": frontends})
    per_model = tuple(m.model_copy(update={"frontends": frontends}) for m in per_model)
    log.info(
        "limits: batch %d sequences / %d tokens, max wait %.1f ms, %d items per request, "
        "%d queued items, %d characters per text",
        settings.max_batch_size,
        settings.max_batch_tokens,
        settings.max_wait_ms,
        settings.max_items_per_request,
        settings.max_queued_items,
        settings.max_text_chars,
    )

    edge: Edge | None = None
    metrics_dir = None
    if frontends > 1 and settings.metrics_port is not None:
        # Front ends started from here on keep their metrics in files, served from here.
        metrics_dir = frontends_metrics_dir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    metrics = Metrics(
        default_model=settings.default_name, calls=frontends == 1, frontends_dir=metrics_dir
    )
    if frontends > 1:
        # The front ends fork from it: started now (after PROMETHEUS_MULTIPROC_DIR, which they
        # read), its imports overlap the loading of the models' cards.
        start_fork_server()
    registry = ModelRegistry(settings, metrics, stop.set)
    registry.expect(names)
    frontend_pool: FrontendPool | None = None
    if frontends == 1:
        edge = Edge(settings, metrics, reuse_port=False)
        edge.expect(names)
        registry.listen(edge)
        if settings.admin_token_file is not None:
            edge.add_admin(registry)
    else:
        hub = Hub(registry, frontends)
        registry.listen(hub)
        frontend_pool = FrontendPool(settings, frontends, hub)
    # The models load (an OpenVINO model converts) while the port opens and after: callers
    # and probes meet a server that answers NOT_SERVING, not a closed port.
    models_file = settings.models_file is not None
    starting = asyncio.create_task(_start_models(per_model, plans, registry, models_file))
    deadline: float | None = None
    try:
        if edge is not None:
            port = await edge.start(settings.port)
        else:
            assert frontend_pool is not None
            port = await frontend_pool.start()
        log.info(
            "listening on %s:%d with %d front end%s (health NOT_SERVING until the workers are "
            "ready)",
            settings.host,
            port,
            frontends,
            "" if frontends == 1 else "s",
        )
        if settings.metrics_port is not None:
            metrics_host = settings.metrics_host or settings.host
            tokens = []
            if settings.metrics_token_file is not None:
                tokens = load_tokens(settings.metrics_token_file, "--metrics-token-file")
            try:
                metrics_port = metrics.serve(metrics_host, settings.metrics_port, tokens)
            except OSError as error:
                port_text = settings.metrics_port
                raise StartupError(f"cannot serve metrics on port {port_text}: {error}") from error
            log.info("metrics on http://%s:%d/metrics", metrics_host, metrics_port)

        waiting = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises ModelLoadError when a worker could not load the model
            alive = sum(e.alive for e in registry.engines)
            log.info("ready on %s:%d with %d workers", settings.host, port, alive)
            await stop.wait()
        waiting.cancel()
        deadline = loop.time() + settings.shutdown_grace_s
        log.info("shutting down: draining calls for up to %.1f s", settings.shutdown_grace_s)
        drains = []
        if edge is not None:
            drains.append(edge.drain(settings.shutdown_grace_s))
        if frontend_pool is not None:
            drains.append(frontend_pool.drain(settings.shutdown_grace_s + EXIT_S))
        await asyncio.gather(*drains)
    finally:
        starting.cancel()
        stop_conversions()
        # Whatever the drain left of the grace, and a moment to exit; then they are killed.
        exit_s = max(deadline - loop.time(), 0.0) + EXIT_S if deadline is not None else EXIT_S
        # The start-up models' engines and those loaded since, at once.
        await asyncio.gather(*(engine.stop(exit_s) for engine in registry.engines))
        if edge is not None:
            await edge.close()
        if frontend_pool is not None:
            await frontend_pool.drain(EXIT_S)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")


async def _start_models(
    per_model: tuple[Settings, ...],
    plans: list[list[DeviceSpec]],
    registry: ModelRegistry,
    models_file: bool,
) -> None:
    """Loads each start-up model's card, prepares its backend (an OpenVINO model converted),
    serves it, and returns once all their workers are ready."""
    for settings, devices in zip(per_model, plans, strict=True):
        terms = start_up_terms(models_file, settings.model_name)
        backend = resolve_backend(settings, on_gpu=devices[0].gpu is not None)
        if forks_worker(devices[0], backend):
            start_fork_server()  # its imports overlap the card's, as in a LoadModel
        card = await load_card(settings)
        settings, converted = await prepare_backend(settings, card, backend, devices, terms)
        specs = worker_specs(settings, card, devices, converted, terms)
        workers = ", ".join(f"{s.worker_id}={s.device.label}" for s in specs)
        log.info("workers of %s: %s", settings.model_name, workers)
        registry.add(settings, card, specs, devices)
    await registry.start()
