"""Start-up and shutdown: wires settings, model card, engine and front ends together, and runs
until SIGTERM or Ctrl-C.

With one front end (the default on a small host) the gRPC edge and the engine share this
process. With `--frontends N` > 1, this process runs the engine alone and N front-end
processes serve the port, each passing its requests to the engine over a pipe.
"""

import asyncio
import logging
import os
import shutil
import signal
import tempfile

from pipeserve.server.edge.server import Edge
from pipeserve.server.engine.core import Engine
from pipeserve.server.errors import StartupError
from pipeserve.server.frontends.hub import Hub
from pipeserve.server.frontends.pool import FrontendPool
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.model_card import load_model_card
from pipeserve.server.schema import WorkerSpec
from pipeserve.server.settings import Backend, Settings, precision_label
from pipeserve.server.workers.backend import backend_label, converted_model, resolve_backend
from pipeserve.server.workers.devices import check_precision, plan_devices, plan_frontends

log = logging.getLogger("pipeserve")


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    log.info("loading tokenizer and config of %s", settings.model)
    card = await loop.run_in_executor(None, load_model_card, settings)
    log.info(
        "model %s: task %s, max length %d, %d labels",
        card.name,
        card.task,
        card.max_length,
        len(card.id2label),
    )
    devices = plan_devices(settings.devices, settings.workers_per_device)
    on_gpu = devices[0].gpu is not None
    check_precision(settings, on_gpu=on_gpu)
    backend = resolve_backend(settings, on_gpu=on_gpu)
    settings = settings.model_copy(update={"backend": backend})
    log.info(
        "backend %s, precision %s",
        backend_label(backend),
        precision_label(backend, settings.dtype, settings.quantize),
    )
    converted = None
    if backend is Backend.OPENVINO:
        converted = await loop.run_in_executor(None, converted_model, settings, card.task)
    specs = [
        WorkerSpec(
            worker_id=i,
            model=settings.model,
            revision=settings.revision,
            task=card.task,
            dtype=settings.dtype,
            quantize=settings.quantize,
            device=device,
            allow_missing_weights=settings.allow_missing_weights,
            backend=backend,
            converted=None if converted is None else str(converted),
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        for i, device in enumerate(devices)
    ]
    frontends = plan_frontends(settings.frontends, devices)
    settings = settings.model_copy(update={"frontends": frontends})
    log.info("workers: %s", ", ".join(f"{s.worker_id}={s.device.label}" for s in specs))
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
    hub: Hub | None = None

    def on_alive_change(alive: int) -> None:
        if edge is not None:
            edge.mark_alive(alive)
        if hub is not None:
            hub.broadcast_state()

    metrics_dir = None
    if frontends > 1 and settings.metrics_port is not None:
        # Front ends spawned from here on keep their metrics in files, served from here.
        metrics_dir = tempfile.mkdtemp(prefix="pipeserve-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    metrics = Metrics(calls=frontends == 1, frontends_dir=metrics_dir)
    engine = Engine(settings, card, specs, metrics, on_alive_change)
    stop = asyncio.Event()
    frontend_pool: FrontendPool | None = None
    # Workers load the model while the front ends start.
    starting = asyncio.create_task(engine.start(on_batcher_failed=stop.set))
    try:
        if frontends == 1:
            edge = Edge(settings, card, engine, metrics, reuse_port=False)
            port = await edge.start(settings.port)
        else:
            hub = Hub(engine)
            frontend_pool = FrontendPool(settings, frontends, hub)
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
            try:
                metrics_port = metrics.serve(settings.host, settings.metrics_port)
            except OSError as error:
                port_text = settings.metrics_port
                raise StartupError(f"cannot serve metrics on port {port_text}: {error}") from error
            log.info("metrics on http://%s:%d/metrics", settings.host, metrics_port)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiting = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises ModelLoadError when a worker could not load the model
            log.info("ready on %s:%d with %d workers", settings.host, port, engine.alive)
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
        await engine.stop()
        if edge is not None:
            await edge.close()
        if frontend_pool is not None:
            await frontend_pool.drain()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")
