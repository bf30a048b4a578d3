"""The Rerank request path, free of gRPC: each (query, document) pair (one item of the shared
batcher) -> `Infer` -> a cross-encoder's logit -> the documents ranked, as
sentence-transformers' CrossEncoder.rank scores them (`pipeline/rerank.py`).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import ScoreFunction
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.pipeline.rerank import Ranked, cross_encoder_activation, rank
from pipeserve.server.requests.infer import Infer, Timings


@dataclass(frozen=True)
class RerankResult:
    ranked: list[Ranked]
    timings: Timings


class Rerank:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        # None for a model Rerank refuses (served.py); never used then.
        self._activation = cross_encoder_activation(infer.card.cross_encoder_activation)

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
        logits, timings = await self._infer.logits(
            [(query, document) for document in documents], options, deadline
        )
        start = time.perf_counter()
        assert self._activation is not None  # require() refused a model without one
        function = ScoreFunction.NONE if raw_scores else self._activation
        ranked = rank(logits[:, 0], function, top_n or None)
        self._infer.observe_postprocess(start, timings)
        return RerankResult(ranked, timings)
