"""The request paths of the RPCs that run text pairs through a sequence classifier: Rerank
(query x document, a cross-encoder) and ClassifyZeroShot (text x hypothesis, an NLI model).

Every pair is one item of the shared queue, batched with every other call's items; what comes
back is each pair's logits, scored here as sentence-transformers' CrossEncoder or transformers'
zero-shot pipeline would score them.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import LabelScore, ScoreFunction
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.pipeline.rerank import Ranked, cross_encoder_activation, rank
from pipeserve.server.pipeline.zero_shot import hypotheses, label_scores
from pipeserve.server.requests.infer import Infer, Timings


@dataclass(frozen=True)
class RerankResult:
    ranked: list[Ranked]
    timings: Timings


@dataclass(frozen=True)
class ZeroShotResult:
    labels: list[list[LabelScore]]
    timings: Timings


class PairTasks:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        # None for a model Rerank refuses (served.py); never used then.
        self._activation = cross_encoder_activation(infer.card.cross_encoder_activation)

    async def _logits(
        self, pairs: list[tuple[str, str]], options: TextOptions, deadline: float | None
    ) -> tuple[np.ndarray, Timings]:
        rows, _, timings = await self._infer.run(pairs, options, ("logits",), deadline)
        return np.stack([row["logits"] for row in rows]), timings

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None,
        raw_scores: bool,
        options: TextOptions,
        deadline: float | None,
    ) -> RerankResult:
        self._infer.require("Rerank")
        if not query:
            raise InvalidInput("query is empty")
        if not documents:
            raise InvalidInput("documents is empty: give at least one document")
        if top_n is not None and top_n < 0:
            raise InvalidInput(f"top_n must be 0 (all) or positive; got {top_n}")
        for index, document in enumerate(documents):
            if not document:
                raise InvalidInput(f"documents[{index}] is empty")
        logits, timings = await self._logits(
            [(query, document) for document in documents], options, deadline
        )
        start = time.perf_counter()
        assert self._activation is not None  # require() refused a model without one
        function = ScoreFunction.NONE if raw_scores else self._activation
        ranked = rank(logits[:, 0], function, top_n or None)
        self._infer.observe_postprocess(start, timings)
        return RerankResult(ranked, timings)

    async def classify_zero_shot(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        template: str,
        multi_label: bool,
        options: TextOptions,
        deadline: float | None,
    ) -> ZeroShotResult:
        card = self._infer.card
        self._infer.require("ClassifyZeroShot")
        if not texts:
            raise InvalidInput("inputs is empty: send at least one text")
        for index, text in enumerate(texts):
            if not text:
                raise InvalidInput(f"inputs[{index}] is empty")
        formatted = hypotheses(labels, template)
        # The pipeline truncates the text only: the hypothesis stays whole.
        pairs = [(text, hypothesis) for text in texts for hypothesis in formatted]
        logits, timings = await self._logits(pairs, replace(options, only_first=True), deadline)
        start = time.perf_counter()
        shaped = logits.reshape(len(texts), len(formatted), -1)
        assert card.entailment_id is not None  # require() refused a model without one
        results = label_scores(shaped, card.entailment_id, multi_label, labels)
        self._infer.observe_postprocess(start, timings)
        return ZeroShotResult(results, timings)
