"""Which RPC a loaded model serves: the one table of it, for ModelInfo.served_rpcs and for the
FAILED_PRECONDITION an RPC answers when the model cannot serve it. Most RPCs need a head;
Rerank and ClassifyZeroShot need more of a sequence classifier, read off its card."""

from collections.abc import Callable

from pipeserve.server.errors import UnsupportedByModel
from pipeserve.server.model.card import ModelCard
from pipeserve.server.pipeline.rerank import KNOWN_ACTIVATIONS, cross_encoder_activation
from pipeserve.server.settings import Task

# Every RPC of the Inference service, in its order -> the head it needs (None: any head).
RPC_TASKS: dict[str, Task | None] = {
    "Tokenize": None,
    "Forward": None,
    "Classify": Task.TEXT_CLASSIFICATION,
    "ClassifyStream": Task.TEXT_CLASSIFICATION,
    "ClassifyTokens": Task.TOKEN_CLASSIFICATION,
    "FillMask": Task.FILL_MASK,
    "ModelInfo": None,
    "Embed": Task.FEATURE_EXTRACTION,
    "Rerank": Task.TEXT_CLASSIFICATION,
    "ClassifyZeroShot": Task.TEXT_CLASSIFICATION,
    "ListModels": None,
}

# How an error message names the model a head needs.
_MODEL_KIND: dict[Task, str] = {
    Task.FEATURE_EXTRACTION: "a bare encoder (AutoModel)",
    Task.TEXT_CLASSIFICATION: (
        "a sequence-classification model (AutoModelForSequenceClassification)"
    ),
    Task.TOKEN_CLASSIFICATION: "a token-classification model (AutoModelForTokenClassification)",
    Task.FILL_MASK: "a masked language model (AutoModelForMaskedLM)",
}


def _rerank_lacks(card: ModelCard) -> str | None:
    if len(card.id2label) != 1:
        return (
            f"a cross-encoder (a sequence classifier with one label); {card.name} is served "
            f"as {card.task} with {len(card.id2label)} labels"
        )
    if cross_encoder_activation(card.cross_encoder_activation) is None:
        return (
            f"a CrossEncoder activation it reproduces ({KNOWN_ACTIVATIONS}); {card.name}'s "
            f"config saves {card.cross_encoder_activation!r}"
        )
    return None


def _zero_shot_lacks(card: ModelCard) -> str | None:
    if card.entailment_id is None:
        return (
            "an NLI model, whose config.label2id has a label starting with 'entail'; "
            f"{card.name} has {', '.join(card.labels)}"
        )
    return None


# What an RPC needs beyond its head -> what the card lacks for it (None: nothing).
_MORE_NEEDED: dict[str, Callable[[ModelCard], str | None]] = {
    "Rerank": _rerank_lacks,
    "ClassifyZeroShot": _zero_shot_lacks,
}


def _lacks(rpc: str, card: ModelCard) -> str | None:
    """What `card`'s model lacks to serve `rpc`, as "<rpc> needs ..."; None if it serves it."""
    needed = RPC_TASKS[rpc]
    if needed is not None and needed is not card.task:
        return f"{rpc} needs {_MODEL_KIND[needed]}; {card.name} is served as {card.task}"
    more = _MORE_NEEDED.get(rpc)
    lacking = more(card) if more is not None else None
    return None if lacking is None else f"{rpc} needs {lacking}"


def served_rpcs(card: ModelCard) -> list[str]:
    """The RPCs the model of `card` serves."""
    return [rpc for rpc in RPC_TASKS if _lacks(rpc, card) is None]


def require_rpc(rpc: str, card: ModelCard) -> None:
    """Refuses `rpc` (FAILED_PRECONDITION, naming what the model lacks) unless it serves it."""
    lacking = _lacks(rpc, card)
    if lacking is not None:
        raise UnsupportedByModel(f"{lacking} (it serves {', '.join(served_rpcs(card))})")
