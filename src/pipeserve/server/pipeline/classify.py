"""Step 3 of the pipeline: logits -> labelled scores, as transformers' text-classification
pipeline computes them. Pure numpy; knows nothing of gRPC or workers."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class ScoreFunction(StrEnum):
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    NONE = "none"


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float
    index: int


def default_score_function(
    problem_type: str | None, num_labels: int, configured: str | None
) -> ScoreFunction:
    """The pipeline's default, in its order: raw scores for regression, else by problem type
    and label count, else the config's own choice (transformers' TextClassificationPipeline
    .postprocess)."""
    if problem_type == "regression":
        return ScoreFunction.NONE
    if problem_type == "multi_label_classification" or num_labels == 1:
        return ScoreFunction.SIGMOID
    if problem_type == "single_label_classification" or num_labels > 1:
        return ScoreFunction.SOFTMAX
    if configured is not None:
        return ScoreFunction(configured.lower())
    return ScoreFunction.NONE


def apply_score_function(logits: np.ndarray, function: ScoreFunction) -> np.ndarray:
    """Scores for logits of shape [..., labels], in float32 like the pipeline."""
    logits = logits.astype(np.float32, copy=False)
    if function is ScoreFunction.SIGMOID:
        return 1.0 / (1.0 + np.exp(-logits))
    if function is ScoreFunction.SOFTMAX:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits


def top_labels(
    scores: Sequence[float], id2label: dict[int, str], top_k: int | None
) -> list[LabelScore]:
    """Labels of one item, best first; top_k None means all. Ties keep label order."""
    ranked = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    if top_k is not None:
        ranked = ranked[:top_k]
    return [LabelScore(id2label.get(i, f"LABEL_{i}"), scores[i], i) for i in ranked]
