"""Cross-encoder reranking as sentence-transformers' CrossEncoder does it: one logit per
(query, document) pair, the model's activation on top, documents sorted by score.

Pure: no torch, no gRPC.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeserve.server.pipeline.classify import ScoreFunction, apply_score_function

# CrossEncoder's activation by the dotted path a checkpoint may save in its config
# (config.sentence_transformers["activation_fn"]); anything else is not reproduced.
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
