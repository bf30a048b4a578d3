"""The served models by name: what each request's `model` field resolves to.

Each model has its own engine (queue, batcher, dispatcher, workers), model card and a request
path per task, composed here (`ServedModel.compose`); the edge keeps one `ServedModel` per
name and routes every call through `get`.
"""

from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from pipeserve.server.engine.core import EngineCalls
from pipeserve.server.errors import ModelNotFound, Unavailable
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.requests.classify import Classify
from pipeserve.server.requests.classify_tokens import ClassifyTokens
from pipeserve.server.requests.embed import Embedder
from pipeserve.server.requests.fill_mask import FillMask
from pipeserve.server.requests.infer import Infer
from pipeserve.server.requests.rerank import Rerank
from pipeserve.server.requests.zero_shot import ZeroShot
from pipeserve.server.settings import Settings


@dataclass(frozen=True)
class ServedModel:
    name: str
    # The server's settings with this model's own values; it names this model alone.
    settings: Settings
    card: ModelCard
    engine: EngineCalls
    infer: Infer
    classify: Classify
    classify_tokens: ClassifyTokens
    fill_mask: FillMask
    embedder: Embedder
    rerank: Rerank
    zero_shot: ZeroShot
    # Worker id -> workers of other models on the same device, as "MODEL/ID"; updated in
    # place as models are loaded and unloaded while serving.
    shared_with: dict[int, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def compose(
        cls,
        settings: Settings,
        card: ModelCard,
        engine: EngineCalls,
        executor: Executor,
        metrics: Metrics,
        shared_with: dict[int, tuple[str, ...]],
    ) -> "ServedModel":
        """The model `settings` names with the request path of every task over its engine; a
        new task's path is added here alone."""
        infer = Infer(card, engine, settings, executor, metrics)
        return cls(
            settings.model_name,
            settings,
            card,
            engine,
            infer,
            Classify(infer),
            ClassifyTokens(infer),
            FillMask(infer),
            Embedder(infer, settings.revision),
            Rerank(infer),
            ZeroShot(infer),
            shared_with,
        )


class Models:
    def __init__(self, default: str) -> None:
        self.default = default
        self._by_name: dict[str, ServedModel] = {}
        # Models of the start-up still loading (the port opens first): UNAVAILABLE, not
        # NOT_FOUND, to callers.
        self._loading: set[str] = set()

    def expect(self, names: Iterable[str]) -> None:
        """Models `names` are being loaded at start-up, and will be added."""
        self._loading.update(names)

    @property
    def loading(self) -> bool:
        """Whether some model of the start-up is still loading."""
        return bool(self._loading)

    def add(self, model: ServedModel) -> None:
        self._by_name[model.name] = model
        self._loading.discard(model.name)

    def remove(self, name: str) -> None:
        """Routes no new call to `name`; the calls that already got it keep it."""
        del self._by_name[name]

    def get(self, name: str) -> ServedModel:
        """The model a request's `model` field names; empty names the default."""
        found = self._by_name.get(name or self.default)
        if found is None and (name or self.default) in self._loading:
            raise Unavailable(f"model {name or self.default!r} is still loading; retry shortly")
        if found is None:
            raise ModelNotFound.among(name or f"{self.default} (the default)", self._by_name)
        return found

    def __iter__(self):
        return iter(list(self._by_name.values()))
