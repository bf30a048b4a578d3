"""ClassifyTokens from the client: its call (arguments and docstring), the request they
build, how the response is read and what it returns (Entity).
Pure (no I/O); `tasks/__init__.py` binds the call as a method of Client and AsyncClient.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from pipeserve.client.bind import Call
from pipeserve.client.build import _choice, _options, _stride, _strings, _texts
from pipeserve.client.results import Windowed
from pipeserve.client.split import Split, concatenated, token_bound
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import AGGREGATION_STRATEGIES

AggregationStrategy: TypeAlias = str
"""A name of wire.AGGREGATION_STRATEGIES ("none", "simple", "first", "average", "max")."""


@dataclass(frozen=True)
class Entity:
    """An entity classify_tokens() found (a token, with aggregation_strategy "none").

    `label` is the pipeline's entity_group when tokens are aggregated, its entity otherwise;
    `word` is its tokens decoded, `text[start:end]` the entity as written; `index` is the
    token's index (strategy "none" only)."""

    label: str
    score: float
    word: str
    start: int
    end: int
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The token-classification pipeline's dict: entity_group, or entity and index."""
        if self.index is None:
            return {
                "entity_group": self.label,
                "score": self.score,
                "word": self.word,
                "start": self.start,
                "end": self.end,
            }
        return {
            "entity": self.label,
            "score": self.score,
            "index": self.index,
            "word": self.word,
            "start": self.start,
            "end": self.end,
        }


def classify_tokens_request(
    inputs: Iterable[str],
    *,
    aggregation_strategy: AggregationStrategy = "none",
    ignore_labels: Iterable[str] | None = None,
    stride: int | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.ClassifyTokensRequest:
    """Builds a ClassifyTokensRequest; raises TypeError/ValueError for inputs or options it
    can't send."""
    request = pb.ClassifyTokensRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        aggregation_strategy=_choice(
            "aggregation_strategy", aggregation_strategy, AGGREGATION_STRATEGIES
        ),
        **_stride(stride),
        options=_options(truncation=truncation, max_length=max_length),
    )
    if ignore_labels is not None:  # unset means the pipeline's ["O"], which [] must not
        request.ignore_labels.SetInParent()
        request.ignore_labels.labels.extend(_strings(ignore_labels, "ignore_labels"))
    return request


def token_classifications(response: pb.ClassifyTokensResponse) -> list[Windowed[Entity]]:
    """Per input, its entities in text order (and the windows it was labelled by)."""
    return [
        Windowed(
            (
                Entity(
                    label=e.label,
                    score=e.score,
                    word=e.word,
                    start=e.start,
                    end=e.end,
                    index=e.index if e.HasField("index") else None,
                )
                for e in result.entities
            ),
            result.windows,
        )
        for result in response.results
    ]


def classify_tokens(
    inputs: Iterable[str],
    *,
    aggregation_strategy: AggregationStrategy = "none",
    ignore_labels: Iterable[str] | None = None,
    stride: int | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[Windowed[Entity]]]:
    """Labels each token of the texts with a token-classification model (NER, POS), as
    transformers' pipeline("token-classification", aggregation_strategy=...).

    `aggregation_strategy` is "none" (one Entity per token, with its index), "simple",
    "first", "average" or "max" (tokens grouped into entities). Entities labelled one of
    `ignore_labels` (default ["O"]) are left out. `stride` labels a text longer than
    `max_length` whole, by windows overlapping by `stride` tokens (needs a strategy other
    than "none"). Returns per text its entities in text order; `text[e.start:e.end]` is the
    entity as written, and each list's `windows` how many windows it took.
    """
    request = classify_tokens_request(
        inputs,
        model=model,
        aggregation_strategy=aggregation_strategy,
        ignore_labels=ignore_labels,
        stride=stride,
        truncation=truncation,
        max_length=max_length,
    )
    parts = Split("inputs", concatenated, token_bound(request))
    return Call("ClassifyTokens", request, token_classifications, timeout, parts)
