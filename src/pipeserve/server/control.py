"""The served models' engines, and models loaded and unloaded while the server serves
(the Admin service's LoadModel and UnloadModel, `edge/admin.py`).

Each model has its own engine and workers, so loading or unloading one touches nothing of
the others: a load builds a new engine beside them and adds it to the routing once its workers
are ready; an unload takes a model out of the routing at once, lets its calls finish, then
stops its engine. Runs with one front end only (the routing is the edge's, in this process).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pipeserve.server.edge.server import Edge
from pipeserve.server.engine.core import Engine
from pipeserve.server.errors import (
    InvalidInput,
    LoadFailed,
    ModelBusy,
    ModelExists,
    StartupError,
)
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.model.loading import load_card, prepare_backend, worker_specs
from pipeserve.server.model.source import check_model_source
from pipeserve.server.schema import DeviceSpec
from pipeserve.server.settings import Settings, is_model_name
from pipeserve.server.workers.devices import plan_models, shared_devices

log = logging.getLogger("pipeserve")


class ModelControl:
    """Owns every model's engine: those served, those loading and those draining."""

    def __init__(
        self,
        settings: Settings,
        edge: Edge,
        metrics: Metrics,
        on_batcher_failed: Callable[[], None],
    ) -> None:
        # The server's settings: what a loaded model's request leaves unset.
        self._settings = settings
        self._edge = edge
        self._metrics = metrics
        self._on_batcher_failed = on_batcher_failed
        self._served: dict[str, Engine] = {}
        self._plans: dict[str, list[DeviceSpec]] = {}
        self._loading: dict[str, Engine | None] = {}
        self._unloading: dict[str, Engine] = {}
        # Unloads run to the end even if their caller leaves.
        self._unloads: set[asyncio.Task] = set()

    def add(
        self, settings: Settings, card: ModelCard, engine: Engine, plan: list[DeviceSpec]
    ) -> None:
        """Serves a model whose engine is starting (the start-up models)."""
        name = settings.model_name
        self._served[name] = engine
        self._plans[name] = plan
        self._edge.add_model(settings, card, engine)
        self._share()

    @property
    def engines(self) -> list[Engine]:
        """Every engine running: served, loading or draining (for shutdown)."""
        loading = [e for e in self._loading.values() if e is not None]
        return [*self._served.values(), *loading, *self._unloading.values()]

    def _share(self) -> None:
        """Recomputes which workers of different models share a device (ModelInfo)."""
        names = list(self._plans)
        tables = shared_devices(names, [self._plans[n] for n in names])
        for name, table in zip(names, tables, strict=True):
            shared = self._edge.models.get(name).shared_with
            shared.clear()
            shared.update(table)

    # LoadModel.

    async def load(self, name: str, path: str, options: dict[str, Any]) -> None:
        """Loads model `path` as `name` with `options` (Settings fields) over the server's
        settings; returns once its workers are ready and it is served."""
        if not is_model_name(name):
            raise InvalidInput(
                f"LoadModel: cannot name a model {name!r}; use letters, digits, '.', '_' and '-'"
            )
        if not path:
            raise InvalidInput(f"LoadModel {name}: give path, a checkpoint folder or hub id")
        if name in self._unloading:
            raise ModelBusy(f"model {name!r} is being unloaded; load it again once that is done")
        if name in self._served or name in self._loading:
            state = "being loaded" if name in self._loading else "served"
            raise ModelExists(f"model {name!r} is {state} already; unload it first to replace it")
        settings = self._model_settings(name, path, options)
        self._loading[name] = None
        try:
            engine, card, plan = await self._start(settings)
        except StartupError as error:
            log.error("LoadModel %s: %s", name, error)
            raise LoadFailed(f"LoadModel {name}: {error}") from None
        finally:
            del self._loading[name]
        self._served[name] = engine
        self._plans[name] = plan
        self._edge.add_model(settings, card, engine)
        self._share()
        await self._edge.set_alive(name, engine.alive)
        workers = ", ".join(f"{i}={d.label}" for i, d in enumerate(plan))
        log.info("loaded model %s while serving: workers %s", name, workers)

    def _model_settings(self, name: str, path: str, options: dict[str, Any]) -> Settings:
        """The new model's settings, checked by the rules of the flags and models file."""
        common = self._settings.model_dump(exclude={"model", "default_model", "models_file"})
        try:
            return Settings.model_validate({**common, **options, "model": (f"{name}={path}",)})
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(map(str, problem["loc"])) or "settings"
            raise InvalidInput(f"LoadModel {name}: {where}: {problem['msg']}") from None

    async def _start(self, settings: Settings) -> tuple[Engine, ModelCard, list[DeviceSpec]]:
        """The model's engine, its workers ready; every piece stopped again if that fails."""
        name = settings.model_name
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, check_model_source, settings.model_source)
        card = await load_card(settings)
        # Its CPU workers split the cores as if it were alone: the served models' workers
        # keep theirs, so they share cores (ModelInfo's shared_with says with whom).
        (plan,) = plan_models([(settings.devices, settings.workers_per_device)])
        settings, converted = await prepare_backend(settings, card, on_gpu=plan[0].gpu is not None)
        specs = worker_specs(settings, card, plan, converted)
        engine = Engine(settings, card, specs, self._metrics, self._alive_callback(name))
        self._loading[name] = engine
        try:
            await engine.start(on_batcher_failed=self._on_batcher_failed)
        except BaseException:  # a worker failed to load it, or the caller left
            await engine.stop()
            self._metrics.forget(name)
            raise
        return engine, card, plan

    def _alive_callback(self, name: str) -> Callable[[int], None]:
        # The edge ignores a model it does not serve (yet, or any more).
        return lambda alive: self._edge.mark_alive(name, alive)

    # UnloadModel.

    async def unload(self, name: str, grace_s: float | None) -> int:
        """Takes model `name` out of the routing, waits up to `grace_s` (default: the
        shutdown grace) for its calls, stops its engine; returns how many calls were cut."""
        if not name:
            raise InvalidInput("UnloadModel: give the name of the model to unload")
        if name in self._loading:
            raise ModelBusy(f"model {name!r} is being loaded; unload it once LoadModel returned")
        self._edge.models.get(name)  # NOT_FOUND, naming the served models
        if grace_s is not None and grace_s < 0:
            raise InvalidInput(f"UnloadModel {name}: grace_s must be 0 or more; got {grace_s}")
        engine = self._unloading[name] = self._served.pop(name)
        del self._plans[name]
        await self._edge.remove_model(name)
        self._share()
        task = asyncio.create_task(self._drain_and_stop(name, engine, grace_s))
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)
        return await asyncio.shield(task)

    async def _drain_and_stop(self, name: str, engine: Engine, grace_s: float | None) -> int:
        grace = self._settings.shutdown_grace_s if grace_s is None else grace_s
        log.info("unloading model %s: draining its calls for up to %.1f s", name, grace)
        try:
            cut = await engine.drain(grace)
            await engine.stop()
            self._metrics.forget(name)
        finally:
            del self._unloading[name]
        log.info("unloaded model %s (%d calls cut)", name, cut)
        return cut
