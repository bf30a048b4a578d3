"""The ClassifyTokens request path, free of gRPC: each text (a long one as several windows,
each one item of the shared batcher) -> `Infer` -> its tokens' logits -> entities, as
transformers' token-classification pipeline gives them (`pipeline/classify_tokens.py`).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify_tokens import Entity, Strategy, entities
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.requests.infer import Infer, Timings


@dataclass(frozen=True)
class TokenClassification:
    entities: list[Entity]
    windows: int


class ClassifyTokens:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        self._card = infer.card

    async def classify_tokens(
        self,
        texts: Sequence[str],
        strategy: Strategy,
        ignore_labels: Sequence[str],
        stride: int | None,
        options: TextOptions,
        deadline: float | None,
    ) -> tuple[list[TokenClassification], Timings]:
        self._infer.require("ClassifyTokens")
        if stride is not None and strategy is Strategy.NONE:
            # The pipeline refuses it too: entities of overlapping windows are merged by
            # their spans, which single tokens would not survive.
            raise InvalidInput(
                "stride needs an aggregation_strategy other than none (simple, first, "
                "average or max), as the token-classification pipeline does"
            )
        split = self._infer.windows(options, stride, details=True)
        rows, windows, timings = await self._infer.run_windows(
            texts, options, ("logits",), deadline, split
        )
        start = time.perf_counter()
        card = self._card

        def postprocess() -> list[TokenClassification]:
            return [
                TokenClassification(
                    entities(
                        text,
                        [(w, r["logits"]) for w, r in zip(text_windows, text_rows, strict=True)],
                        card.id2label,
                        strategy,
                        ignore_labels,
                        card.tokenizer,
                    ),
                    len(text_windows),
                )
                for text, text_windows, text_rows in zip(texts, windows, rows, strict=True)
            ]

        # A loop over every token of every window: off the event loop for a long request.
        results = await self._infer.off_loop_if_long(texts, postprocess)
        self._infer.observe_postprocess(start, timings)
        return results, timings
