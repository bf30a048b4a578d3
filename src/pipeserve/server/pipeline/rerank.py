"""Cross-encoder reranking as sentence-transformers' CrossEncoder does it: one logit per
(query, document) pair, the model's activation on top, documents sorted by score.

Pure: no torch, no gRPC.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeserve.server.pipeline.classify import ScoreFunction, apply_score_function

# CrossEncoder's activation by the dotted path a checkpoint saves (`saved_activation`);
# anything else is not reproduced.
_ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": ScoreFunction.SIGMOID,
    "torch.nn.Sigmoid": ScoreFunction.SIGMOID,
    "torch.nn.modules.linear.Identity": ScoreFunction.NONE,
    "torch.nn.Identity": ScoreFunction.NONE,
}
# How an error message names them.
KNOWN_ACTIVATIONS = "sigmoid, identity"


@dataclass(frozen=True)
class Ranked:
    index: int
    score: float


def _trusted(path: str | None) -> bool:
    # CrossEncoder imports only torch's own classes without trust_remote_code (the default);
    # for any other path it warns and keeps its default activation.
    return path is not None and path.startswith("torch.")


def saved_activation(
    sentence_transformers_config: Mapping | None,
    config_key: Mapping | None,
    legacy_key: str | None,
) -> str | None:
    """The activation path CrossEncoder(checkpoint) applies, looked up in its order: the
    "activation_fn" of config_sentence_transformers.json (`sentence_transformers_config`, read
    when the checkpoint has a modules.json), else config.json's
    `sentence_transformers["activation_fn"]` (`config_key`), else the key of versions before
    4.0, `sbert_ce_default_activation_function` (`legacy_key`). None: its default."""
    first = (sentence_transformers_config or {}).get("activation_fn")
    if _trusted(first):
        return first
    if config_key is not None and "activation_fn" in config_key:
        path = config_key["activation_fn"]
    else:
        path = legacy_key
    return path if _trusted(path) else None


def cross_encoder_activation(saved: str | None) -> ScoreFunction | None:
    """The score function of a one-label CrossEncoder whose config saved `saved` as its
    activation (sigmoid when none is saved); None when it is one this module does not know."""
    if saved is None:
        return ScoreFunction.SIGMOID
    return _ACTIVATIONS.get(saved)


def rank(logits: np.ndarray, function: ScoreFunction, top_n: int | None) -> list[Ranked]:
    """[documents] logits -> the documents best first (ties in document order), as
    CrossEncoder.rank() sorts them; at most `top_n`."""
    scores = apply_score_function(logits, function).tolist()
    order: Sequence[int] = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    return [Ranked(i, scores[i]) for i in order[:top_n]]
