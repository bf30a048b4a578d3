"""Start-up and shutdown: wires settings, model card, engine and front ends together, and runs
until SIGTERM or Ctrl-C.

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

from pipeserve.server.edge.security import load_tokens
from pipeserve.server.edge.server import Edge
from pipeserve.server.engine.registry import ModelRegistry
from pipeserve.server.errors import StartupError
from pipeserve.server.frontends.hub import Hub
from pipeserve.server.frontends.pool import FrontendPool
from pipeserve.server.metrics import Metrics, frontends_metrics_dir
from pipeserve.server.model.loading import load_card, prepare_backend, worker_specs
from pipeserve.server.settings import Settings
from pipeserve.server.workers.devices import plan_frontends, plan_models

log = logging.getLogger("pipeserve")


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    per_model = settings.per_model()
    cards = [await load_card(m) for m in per_model]
    plans = plan_models([(m.devices, m.workers_per_device) for m in per_model])
    names = [m.model_name for m in per_model]
    prepared = [
        await prepare_backend(m, card, on_gpu=devices[0].gpu is not None)
        for m, card, devices in zip(per_model, cards, plans, strict=True)
    ]
    frontends = plan_frontends(settings.frontends, [d for plan in plans for d in plan])
    settings = settings.model_copy(update={"frontends": frontends})
    per_model = tuple(m.model_copy(update={"frontends": frontends}) for m, _ in prepared)
    specs = [
        worker_specs(m, card, devices, converted)
        for m, card, devices, (_, converted) in zip(per_model, cards, plans, prepared, strict=True)
    ]
    for name, model_specs in zip(names, specs, strict=True):
        workers = ", ".join(f"{s.worker_id}={s.device.label}" for s in model_specs)
        log.info("workers of %s: %s", name, workers)
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
        # Front ends spawned from here on keep their metrics in files, served from here.
        metrics_dir = frontends_metrics_dir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    metrics = Metrics(
        default_model=settings.default_name, calls=frontends == 1, frontends_dir=metrics_dir
    )
    stop = asyncio.Event()
    registry = ModelRegistry(settings, metrics, stop.set)
    frontend_pool: FrontendPool | None = None
    if frontends == 1:
        edge = Edge(settings, metrics, reuse_port=False)
        registry.listen(edge)
        if settings.admin_token_file is not None:
            edge.add_admin(registry)
    else:
        hub = Hub(registry, frontends)
        registry.listen(hub)
        frontend_pool = FrontendPool(settings, frontends, hub)
    for parts in zip(per_model, cards, specs, plans, strict=True):
        await registry.add(*parts)
    # Workers load the models while the front ends start.
    starting = asyncio.create_task(registry.start())
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

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiting = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises ModelLoadError when a worker could not load the model
            alive = sum(e.alive for e in registry.engines)
            log.info("ready on %s:%d with %d workers", settings.host, port, alive)
            await stop.wait()
        else:
            starting.cancel()
        waiting.cancel()
        log.info("shutting down: draining calls for up to %.1f s", settings.shutdown_grace_s)
        if edge is not None:
            await edge.drain(settings.shutdown_grace_s)
        if frontend_pool is not None:
            await frontend_pool.drain()
    finally:
        starting.cancel()
        for engine in registry.engines:  # the start-up models' and those loaded since
            await engine.stop()
        if edge is not None:
            await edge.close()
        if frontend_pool is not None:
            await frontend_pool.drain()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
