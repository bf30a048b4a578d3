"""The model registry: every served model's engine, and models loaded and unloaded while the
server serves (the Admin service's LoadModel and UnloadModel).

Each model has its own engine and workers, so loading or unloading one touches nothing of
the others: a load builds a new engine beside them and serves it once its workers are ready;
an unload takes a model out of the routing at once, lets its calls finish, then stops its
engine. The registry knows nothing of gRPC or of front ends: it tells its listeners (the edge
in this process, or the hub of the front-end processes) that a model was added or removed,
and each returns once every caller it serves sees the change.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from pipeserve.server.engine.core import Engine
from pipeserve.server.errors import (
    InvalidInput,
    LoadFailed,
    ModelBusy,
    ModelExists,
    ModelNotFound,
    StartupError,
    TooLarge,
    Unavailable,
    quoted,
)
from pipeserve.server.launch import forks_worker, start_fork_server
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.model.loading import load_card, prepare_backend, worker_specs
from pipeserve.server.model.source import MAX_PATH_CHARS
from pipeserve.server.preflight import check_model
from pipeserve.server.schema import DeviceSpec, WorkerSpec
from pipeserve.server.settings import Settings, is_model_name, settings_problems
from pipeserve.server.terms import Origin, Terms
from pipeserve.server.workers.devices import plan_models, shared_devices

log = logging.getLogger("pipeserve")

# Model -> worker id -> the workers of other models on its device, as "MODEL/ID".
SharedTables = dict[str, dict[int, tuple[str, ...]]]


@dataclass(frozen=True)
class RunningModel:
    # The server's settings with this model's own values; it names this model alone.
    settings: Settings
    card: ModelCard
    engine: Engine

    @property
    def name(self) -> str:
        return self.settings.model_name


class Listener(Protocol):
    """Who routes calls to the registry's models: the edge in this process, or the hub."""

    async def model_added(self, model: RunningModel) -> None:
        """Routes calls to `model`; returns once they reach it."""

    async def model_removed(self, name: str) -> None:
        """Routes no new call to model `name`; returns once none is."""

    def model_alive(self, name: str, alive: int) -> None:
        """Model `name` has `alive` ready workers (ignored for a model not routed to)."""

    def devices_shared(self, tables: SharedTables) -> None:
        """Which workers of different models share a device now (ModelInfo)."""


class ModelRegistry:
    """Owns every model's engine: those served, those loading and those draining."""

    def __init__(
        self, settings: Settings, metrics: Metrics, on_batcher_failed: Callable[[], None]
    ) -> None:
        # The server's settings: what a loaded model's request leaves unset.
        self._settings = settings
        self._metrics = metrics
        self._on_batcher_failed = on_batcher_failed
        self._listeners: list[Listener] = []
        self._served: dict[str, RunningModel] = {}
        self._plans: dict[str, list[DeviceSpec]] = {}
        self._loading: dict[str, Engine | None] = {}
        # Start-up models added, not yet served: `start` serves them.
        self._starting: list[tuple[RunningModel, list[DeviceSpec]]] = []
        self._unloading: dict[str, Engine] = {}
        # Unloads run to the end even if their caller leaves.
        self._unloads: set[asyncio.Task] = set()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def expect(self, names: Iterable[str]) -> None:
        """The start-up models, being loaded until `add`ed: no LoadModel of the same name."""
        for name in names:
            self._loading[name] = None

    @property
    def loading(self) -> tuple[str, ...]:
        """The models being loaded: at start-up, or by LoadModel."""
        return tuple(self._loading)

    def add(
        self, settings: Settings, card: ModelCard, specs: list[WorkerSpec], plan: list[DeviceSpec]
    ) -> None:
        """Takes a start-up model; `start` serves it and starts its engine."""
        model = RunningModel(settings, card, self._engine(settings, card, specs))
        self._starting.append((model, plan))

    async def start(self) -> None:
        """Serves the start-up models and starts their engines, all at once (the front ends
        load a model's tokenizer while its workers load the model); returns when every
        listener serves them and all their workers are ready."""
        on_failed = self._on_batcher_failed
        starting, self._starting = self._starting, []
        for model, _ in starting:
            self._loading.pop(model.name, None)
        await asyncio.gather(
            *(self._serve(model, plan) for model, plan in starting),
            *(model.engine.start(on_failed) for model, _ in starting),
        )

    @property
    def served(self) -> list[RunningModel]:
        return list(self._served.values())

    def running(self, name: str) -> Engine:
        """The engine of model `name`, served or draining (calls that got it keep it)."""
        model = self._served.get(name)
        engine = model.engine if model is not None else self._unloading.get(name)
        if engine is None:
            raise ModelNotFound.among(name, self._served)
        return engine

    @property
    def engines(self) -> list[Engine]:
        """Every engine running: served, loading or draining (for shutdown)."""
        loading = [e for e in self._loading.values() if e is not None]
        loading += [model.engine for model, _ in self._starting]
        served = [m.engine for m in self._served.values()]
        return [*served, *loading, *self._unloading.values()]

    def shared_tables(self) -> SharedTables:
        names = list(self._plans)
        tables = shared_devices(names, [self._plans[n] for n in names])
        return dict(zip(names, tables, strict=True))

    async def _serve(self, model: RunningModel, plan: list[DeviceSpec]) -> None:
        # Announced as it becomes served, with no await between: a front end that attaches
        # meanwhile learns it either from its Welcome or from this announcement, never both.
        self._served[model.name] = model
        self._plans[model.name] = plan
        for listener in self._listeners:
            await listener.model_added(model)
        self._share()

    def _share(self) -> None:
        tables = self.shared_tables()
        for listener in self._listeners:
            listener.devices_shared(tables)

    def _engine(self, settings: Settings, card: ModelCard, specs: list[WorkerSpec]) -> Engine:
        name = settings.model_name

        def alive_changed(alive: int) -> None:
            for listener in self._listeners:
                listener.model_alive(name, alive)

        return Engine(settings, card, specs, self._metrics, alive_changed)

    # LoadModel.

    async def load(self, name: str, path: str, options: dict[str, Any]) -> None:
        """Loads model `path` as `name` with `options` (Settings fields) over the server's
        settings; returns once its workers are ready and every listener serves it."""
        if not is_model_name(name):
            raise InvalidInput(
                f"LoadModel: cannot name a model {quoted(name)}; use letters, digits, '.', '_' "
                "and '-' (at most 128)"
            )
        if not path:
            raise InvalidInput(f"LoadModel {name}: give path, a checkpoint folder or hub id")
        if len(path) > MAX_PATH_CHARS:
            raise InvalidInput(
                f"LoadModel {name}: path has {len(path)} characters; a file system path or hub "
                f"id has at most {MAX_PATH_CHARS}"
            )
        if name in self._unloading:
            raise ModelBusy(f"model {name!r} is being unloaded; load it again once that is done")
        if name in self._served or name in self._loading:
            state = "being loaded" if name in self._loading else "served"
            raise ModelExists(f"model {name!r} is {state} already; unload it first to replace it")
        settings = self._model_settings(name, path, options)
        limit = settings.workers_per_device_limit
        if settings.workers_per_device > limit:
            raise TooLarge(
                f"LoadModel {name}: workers_per_device {settings.workers_per_device} is over "
                f"max_workers_per_device={limit} (the cores there are, unless "
                "--max-workers-per-device says otherwise)"
            )
        self._loading[name] = None
        try:
            model, plan = await self._start(settings)
        except StartupError as error:
            self._metrics.discard(name)  # a step before the engine failed: no series stays
            log.error("LoadModel %s: %s", name, error)
            raise LoadFailed(f"LoadModel {name}: {error}") from None
        finally:
            del self._loading[name]
        # Served to the end even if the caller leaves now: its engine runs.
        await asyncio.shield(self._serve(model, plan))
        workers = ", ".join(f"{i}={d.label}" for i, d in enumerate(plan))
        log.info("loaded model %s while serving: workers %s", name, workers)

    def _model_settings(self, name: str, path: str, options: dict[str, Any]) -> Settings:
        """The new model's settings, checked by the rules of the flags and models file."""
        common = self._settings.model_dump(exclude={"model", "default_model", "models_file"})
        try:
            return Settings.model_validate({**common, **options, "model": (f"{name}={path}",)})
        except ValidationError as error:
            terms = Terms(Origin.LOAD_MODEL, name)
            raise InvalidInput(settings_problems(error, terms)) from None

    async def _start(self, settings: Settings) -> tuple[RunningModel, list[DeviceSpec]]:
        """The model with its workers ready; every piece stopped again if that fails."""
        name = settings.model_name
        terms = Terms(Origin.LOAD_MODEL, name)
        loop = asyncio.get_running_loop()
        # Its CPU workers split the cores as if it were alone: the served models' workers
        # keep theirs, so they share cores (ModelInfo's shared_with says with whom). Auto
        # counts the models served on the CPU, as it counts models started together.
        on_cpu = sum(1 for plan in self._plans.values() if plan[0].gpu is None)
        asks = [(settings.devices, settings.workers_per_device)]
        (plan,) = plan_models(asks, cpu_models_beside=on_cpu)
        on_gpu = plan[0].gpu is not None
        backend = await loop.run_in_executor(None, check_model, settings, terms, on_gpu)
        if forks_worker(plan[0], backend):
            # As at start-up: its imports overlap the card's, and the loop does not wait for
            # them when the first worker forks.
            start_fork_server()
        card = await load_card(settings)
        settings, converted = await prepare_backend(settings, card, backend, plan, terms)
        specs = worker_specs(settings, card, plan, converted, terms)
        engine = self._engine(settings, card, specs)
        self._loading[name] = engine
        try:
            await engine.start(on_batcher_failed=self._on_batcher_failed)
        except BaseException:  # a worker failed to load it, or the caller left
            await engine.stop()
            self._metrics.discard(name)
            raise
        return RunningModel(settings, card, engine), plan

    # UnloadModel.

    async def unload(self, name: str, grace_s: float | None) -> int:
        """Takes model `name` out of the routing, waits up to `grace_s` (default: the
        shutdown grace) for its calls, stops its engine; returns how many calls were cut."""
        if not name:
            raise InvalidInput("UnloadModel: give the name of the model to unload")
        if name in self._loading:
            raise ModelBusy(f"model {name!r} is being loaded; unload it once LoadModel returned")
        if name not in self._served:
            raise ModelNotFound.among(name, self._served)
        if grace_s is not None and grace_s < 0:
            raise InvalidInput(f"UnloadModel {name}: grace_s must be 0 or more; got {grace_s}")
        engine = self._unloading[name] = self._served.pop(name).engine
        del self._plans[name]
        task = asyncio.create_task(self._drain_and_stop(name, engine, grace_s))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)
        return await asyncio.shield(task)

    async def _drain_and_stop(self, name: str, engine: Engine, grace_s: float | None) -> int:
        grace = self._settings.shutdown_grace_s if grace_s is None else grace_s
        try:
            for listener in self._listeners:
                await listener.model_removed(name)
            self._share()
            log.info("unloading model %s: draining its calls for up to %.1f s", name, grace)
            cut = await engine.drain(grace)
            engine.cut(
                Unavailable(
                    f"model {name!r} was unloaded before this call was answered (its "
                    f"unload gave calls {grace:g} s to finish)"
                )
            )
            await engine.stop()
            self._metrics.forget(name)
        finally:
            del self._unloading[name]
        log.info("unloaded model %s (%d calls cut)", name, cut)
        return cut
