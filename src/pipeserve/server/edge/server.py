"""The gRPC edge of one front end: the Inference service, health, reflection, TLS and tokens,
bound and started. The same in every front end, whether the engine runs in its process or
in the main one (`--frontends`). It serves every model added with `add_model`; health has a
service per model (`pipeserve.v1.Inference/NAME`), and the overall status is SERVING only
while every model is (and some model is served). With --admin-token-file it serves the Admin
service too (`admin.py`), and models come and go while it serves: it is a listener of the
model registry (`engine/registry.py`), in this process or, through the hub, in the main one.
With several front ends the overall status is SERVING only while every front end listens."""

import asyncio
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from pipeserve.server.edge import admin, handlers
from pipeserve.server.edge.oip import service as open_inference
from pipeserve.server.edge.reflection import enable_reflection
from pipeserve.server.edge.security import TokenAuthInterceptor, server_credentials
from pipeserve.server.edge.service import InferenceService
from pipeserve.server.engine.core import EngineCalls
from pipeserve.server.engine.registry import RunningModel, SharedTables
from pipeserve.server.errors import StartupError
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.requests.models import Models, ServedModel
from pipeserve.server.settings import Settings
from pipeserve.server.token_files import read_tokens

log = logging.getLogger("pipeserve")

SERVICE_NAME = handlers.SERVICE.full_name


class Edge:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        reuse_port: bool,
        quiet: bool = False,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self.health = health.aio.HealthServicer()
        # The tokenizer pool, for long requests, a thread per core (at most 8): each request
        # sends it a chunk at a time (`requests/infer.py`), so callers take turns there.
        self._executor = ThreadPoolExecutor(
            max_workers=min(8, len(os.sched_getaffinity(0))), thread_name_prefix="tokenize"
        )
        self.models = Models(settings.default_name)
        self._alive: dict[str, int] = {}
        # Models being loaded at start-up, not added yet.
        self._expected: set[str] = set()
        self._shared: SharedTables = {}
        # With several front ends: whether all of them listen (the main process says).
        self._every_frontend = True
        interceptors: list[grpc.aio.ServerInterceptor] = []
        tokens = read_tokens(settings)
        if tokens.inference:
            interceptors.append(
                TokenAuthInterceptor(tokens.inference, settings.auth_open_health, metrics)
            )
            if not quiet:
                log.info("token auth on: %d accepted tokens", len(tokens.inference))
        self._admin_tokens = tokens.admin
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Only front ends of one server share a port; never two servers by accident.
            ("grpc.so_reuseport", int(reuse_port)),
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        self.inference = InferenceService(self.models, settings.max_stream_in_flight)
        handlers.register(self.server, self.inference, metrics)
        # The Open Inference Protocol over the same models, engines and limits.
        self.open_inference = open_inference.OpenInferenceService(
            self.models, settings.max_stream_in_flight
        )
        handlers.register(self.server, self.open_inference, metrics, open_inference.SERVICE)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.reflection:
            served = (SERVICE_NAME, open_inference.SERVICE.full_name, health.SERVICE_NAME)
            if self._admin_tokens:
                served += (admin.SERVICE.full_name,)
            enable_reflection(self.server, served)
        self._quiet = quiet
        self._health_updates: set[asyncio.Task] = set()
        self._lag_watch: asyncio.Task | None = None

    def add_model(self, settings: Settings, card: ModelCard, engine: EngineCalls) -> None:
        """Serves the model `settings` names, NOT_SERVING until `set_alive` says otherwise."""
        self._alive[settings.model_name] = 0
        self._expected.discard(settings.model_name)
        self.models.add(
            ServedModel.compose(
                settings,
                card,
                engine,
                self._executor,
                self._metrics,
                # A copy, updated in place by `devices_shared`.
                dict(self._shared.get(settings.model_name, {})),
            )
        )

    def add_admin(self, registry: admin.Registry) -> None:
        """Serves the Admin service (before `start`), to calls with an admin token."""
        service = admin.AdminService(registry, self.inference)
        admin.register(self.server, service, self._admin_tokens)
        if not self._quiet:
            log.info("admin service on: %d admin tokens", len(self._admin_tokens))

    # The registry's listener calls (`engine/registry.py`).

    async def model_added(self, model: RunningModel) -> None:
        self.add_model(model.settings, model.card, model.engine)
        await self.set_alive(model.name, model.engine.alive)

    def devices_shared(self, tables: SharedTables) -> None:
        self._shared = tables
        for model in self.models:
            model.shared_with.clear()
            model.shared_with.update(tables.get(model.name, {}))

    def expect(self, names: Iterable[str]) -> None:
        """Models `names` are being loaded at start-up (before `start`): NOT_SERVING, and
        calls to them UNAVAILABLE, until they are added."""
        names = tuple(names)
        self._expected.update(names)
        self.models.expect(names)

    async def model_removed(self, model: str) -> None:
        """Routes no new call to `model`: they get NOT_FOUND, its health NOT_SERVING."""
        self.models.remove(model)
        del self._alive[model]
        status = health_pb2.HealthCheckResponse
        await self.health.set(f"{SERVICE_NAME}/{model}", status.NOT_SERVING)
        await self._set_overall()

    async def start(self, port: int) -> int:
        """Binds `port` (0 picks one) and starts serving; returns the bound port."""
        settings = self._settings
        for model in list(self._alive):
            await self.set_alive(model, 0)
        for model in self._expected:
            await self.health.set(
                f"{SERVICE_NAME}/{model}", health_pb2.HealthCheckResponse.NOT_SERVING
            )
        await self._set_overall()
        credentials = server_credentials(settings)
        bind = f"{settings.host}:{port}"
        try:
            if credentials is None:
                bound = self.server.add_insecure_port(bind)
            else:
                bound = self.server.add_secure_port(bind, credentials)
        except RuntimeError as error:
            raise StartupError(f"cannot listen on {bind}: {error}") from error
        if credentials is not None and not self._quiet:
            log.info(
                "TLS on%s", " with client certificates required" if settings.tls_client_ca else ""
            )
        await self.server.start()
        if hasattr(self._metrics, "loop_lag"):  # the process that serves calls
            self._lag_watch = asyncio.create_task(self._metrics.watch_loop_lag())
        return bound

    async def set_alive(self, model: str, alive: int) -> None:
        """Model `model` has `alive` ready workers (ignored while it is not served: loading,
        or unloaded)."""
        if model not in self._alive:
            return
        status = health_pb2.HealthCheckResponse
        self._alive[model] = alive
        await self.health.set(
            f"{SERVICE_NAME}/{model}", status.SERVING if alive else status.NOT_SERVING
        )
        await self._set_overall()

    async def _set_overall(self) -> None:
        status = health_pb2.HealthCheckResponse
        every = (
            bool(self._alive)
            and not self._expected
            and all(self._alive.values())
            and self._every_frontend
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status.SERVING if every else status.NOT_SERVING)

    async def set_every_frontend(self, every: bool) -> None:
        """Whether every front end of the server listens."""
        self._every_frontend = every
        await self._set_overall()

    def model_alive(self, model: str, alive: int) -> None:
        """`set_alive` from a plain callback on the event loop."""
        task = asyncio.get_running_loop().create_task(self.set_alive(model, alive))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def drain(self, grace_s: float) -> None:
        """Health NOT_SERVING, no new calls, calls in flight finish within `grace_s`."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)

    async def close(self) -> None:
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        await self.server.stop(None)
        self._executor.shutdown(wait=False, cancel_futures=True)
