"""The Classify request path, free of gRPC: items -> `Infer` -> their logits -> labelled
scores, as transformers' text-classification pipeline gives them (`pipeline/classify.py`).

With a stride, each text is split into overlapping windows (each one item of the shared
batcher), scored each as Classify scores one and their scores combined (`pipeline/windows.py`).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import (
    LabelScore,
    ScoreFunction,
    apply_score_function,
    top_labels,
)
from pipeserve.server.pipeline.inputs import ModelInput, TextOptions
from pipeserve.server.pipeline.windows import WindowAggregation, combine
from pipeserve.server.requests.infer import Infer, Timings


@dataclass(frozen=True)
class ClassifyResult:
    labels: list[list[LabelScore]]
    timings: Timings
    # Windows each item was classified by (None: one each).
    windows: list[int] | None = None


class Classify:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        self._card = infer.card

    async def classify(
        self,
        items: Sequence[ModelInput],
        function: ScoreFunction | None,
        top_k: int | None,
        options: TextOptions,
        deadline: float | None,
    ) -> ClassifyResult:
        self._infer.require("Classify")
        logits, timings = await self._infer.logits(items, options, deadline)
        start = time.perf_counter()
        scores = apply_score_function(logits, function or self._card.score_function)
        labels = [top_labels(row, self._card.id2label, top_k) for row in scores.tolist()]
        self._infer.observe_postprocess(start, timings)
        return ClassifyResult(labels, timings)

    async def classify_windows(
        self,
        items: Sequence[ModelInput],
        function: ScoreFunction | None,
        top_k: int | None,
        stride: int,
        aggregation: WindowAggregation,
        options: TextOptions,
        deadline: float | None,
    ) -> ClassifyResult:
        """Classify of texts longer than the model takes: each text's windows are scored
        with the score function, as Classify scores one and their scores combined."""
        self._infer.require("Classify")
        texts = []
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidInput(
                    f"inputs[{index}] is a pair or token ids; stride splits texts only (send "
                    "it without stride)"
                )
            texts.append(item)
        split = self._infer.windows(options, stride, details=False)
        rows, windows, timings = await self._infer.run_windows(
            texts, options, ("logits",), deadline, split
        )
        start = time.perf_counter()
        card = self._card
        function = function or card.score_function
        labels = []
        for text_rows in rows:
            scores = apply_score_function(np.stack([r["logits"] for r in text_rows]), function)
            labels.append(top_labels(combine(scores, aggregation).tolist(), card.id2label, top_k))
        self._infer.observe_postprocess(start, timings)
        return ClassifyResult(labels, timings, [len(w) for w in windows])
