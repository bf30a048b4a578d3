"""Start-up and shutdown: wires settings, model card, queue, batcher, workers and the
gRPC server (with health and reflection) together, and runs until SIGTERM or Ctrl-C."""

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pipeserve.server.edge.security import TokenAuthInterceptor, load_tokens, server_credentials
from pipeserve.server.edge.service import InferenceService
from pipeserve.server.edge.status import ErrorInterceptor
from pipeserve.server.engine.batcher import Batcher
from pipeserve.server.engine.infer import Infer
from pipeserve.server.engine.queue import Queue
from pipeserve.server.errors import StartupError
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.model_card import load_model_card
from pipeserve.server.schema import WorkerSpec
from pipeserve.server.settings import Settings
from pipeserve.server.workers.devices import check_precision, plan_devices
from pipeserve.server.workers.pool import WorkerPool
from pipeserve.v1 import pipeserve_pb2, pipeserve_pb2_grpc

log = logging.getLogger("pipeserve")

SERVICE_NAME = pipeserve_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Two servers must never share a port by accident.
        ("grpc.so_reuseport", 0),
    ]


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
    check_precision(settings, on_gpu=devices[0].gpu is not None)
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
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        for i, device in enumerate(devices)
    ]
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

    health_servicer = health.aio.HealthServicer()

    async def on_alive_change(alive: int) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if alive
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, status)

    metrics = Metrics()
    queue = Queue(settings.max_queued_items)
    pool = WorkerPool(
        specs,
        queue,
        pad_token_id=card.tokenizer.pad_token_id,
        send_token_type_ids=card.tokenizer.uses_token_type_ids,
        forward_timeout_s=settings.forward_timeout_s,
        metrics=metrics,
        on_alive_change=lambda alive: loop.create_task(on_alive_change(alive)),
    )
    # One tokenizer thread: the fast tokenizer parallelises a batch internally.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
    infer = Infer(card, queue, pool, settings, executor, metrics)
    metrics.watch(queue, pool)

    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.auth_token_file is not None:
        tokens = load_tokens(settings.auth_token_file)
        interceptors.append(TokenAuthInterceptor(tokens, settings.auth_open_health))
        log.info("token auth on: %d accepted tokens", len(tokens))
    interceptors.insert(0, metrics.interceptor())  # outermost: sees every final status
    interceptors.append(ErrorInterceptor())
    server = grpc.aio.server(interceptors=interceptors, options=_server_options(settings))
    pipeserve_pb2_grpc.add_InferenceServicer_to_server(
        InferenceService(infer, pool, settings), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    await on_alive_change(0)
    credentials = server_credentials(settings)
    bind = f"{settings.host}:{settings.port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, credentials)
    except RuntimeError as error:
        raise StartupError(f"cannot listen on {bind}: {error}") from error
    if credentials is not None:
        log.info("TLS on%s", " with client certificates required" if settings.tls_client_ca else "")
    await server.start()
    log.info(
        "listening on %s:%d (health NOT_SERVING until the workers are ready)", settings.host, port
    )

    if settings.metrics_port is not None:
        try:
            metrics_port = metrics.serve(settings.host, settings.metrics_port)
        except OSError as error:
            port_text = settings.metrics_port
            raise StartupError(f"cannot serve metrics on port {port_text}: {error}") from error
        log.info("metrics on http://%s:%d/metrics", settings.host, metrics_port)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    batcher = Batcher(
        queue,
        pool,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
    )
    batcher_task = asyncio.create_task(batcher.run(), name="batcher")

    def on_batcher_end(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Without a batcher every call would hang: fail loudly and shut down instead.
            log.error("batcher stopped", exc_info=task.exception())
            stop.set()

    batcher_task.add_done_callback(on_batcher_end)
    try:
        starting = asyncio.create_task(pool.start())
        waiting = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises ModelLoadError when a worker could not load the model
            log.info("ready on %s:%d with %d workers", settings.host, port, pool.alive)
            await stop.wait()
        else:
            starting.cancel()
        waiting.cancel()
        log.info("shutting down: draining calls for up to %.1f s", settings.shutdown_grace_s)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_s)
    finally:
        batcher_task.cancel()
        await pool.stop()
        await server.stop(None)
        executor.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")
