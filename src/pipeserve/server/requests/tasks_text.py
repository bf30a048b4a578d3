"""The request path of ClassifyTokens, FillMask and Classify by windows, free of gRPC.

Each tokenizes its texts (a long text into several windows, each one item of the shared
batcher), runs them through `Infer` and postprocesses with the pure steps of
`pipeline/classify_tokens.py`, `pipeline/fill_mask.py` and `pipeline/windows.py`.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeserve.server.errors import InvalidInput, UnsupportedByModel
from pipeserve.server.pipeline.classify import ScoreFunction, apply_score_function, top_labels
from pipeserve.server.pipeline.classify_tokens import Entity, Strategy, entities
from pipeserve.server.pipeline.fill_mask import (
    DEFAULT_TOP_K,
    MaskFill,
    fill,
    mask_logits_output,
    mask_positions,
    target_ids,
)
from pipeserve.server.pipeline.inputs import ModelInput, TextOptions
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.pipeline.windows import WindowAggregation, check_stride, combine
from pipeserve.server.requests.infer import ClassifyResult, Infer, Timings


@dataclass(frozen=True)
class TokenClassification:
    entities: list[Entity]
    windows: int


class TextTasks:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        self._card = infer.card

    def _windows(
        self, texts: Sequence[str], options: TextOptions, stride: int | None, details: bool
    ) -> Callable[[int], list[list[Encoded]]]:
        """`split` for Infer.run_windows: each text's windows (or its one sequence)."""
        tokenizer = self._card.tokenizer

        def split(max_length: int) -> list[list[Encoded]]:
            if stride is not None:
                check_stride(stride, max_length, tokenizer.special_tokens(texts))
            return tokenizer.encode_windows(
                texts,
                truncation=options.truncation,
                max_length=max_length,
                stride=stride,
                details=details,
            )

        return split

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
        split = self._windows(texts, options, stride, details=True)
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

    async def fill_mask(
        self,
        texts: Sequence[str],
        top_k: int,
        targets: Sequence[str],
        options: TextOptions,
        deadline: float | None,
    ) -> tuple[list[list[MaskFill]], Timings]:
        self._infer.require("FillMask")
        tokenizer = self._card.tokenizer
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            raise UnsupportedByModel(f"FillMask needs a mask token; {self._card.name}'s has none")
        if top_k < 1:
            raise InvalidInput(f"top_k must be positive (default {DEFAULT_TOP_K}); got {top_k}")
        restrict = target_ids(targets, tokenizer)
        tokenize = self._windows(texts, options, None, details=False)

        def split(max_length: int) -> list[list[Encoded]]:
            encoded = tokenize(max_length)
            for index, (sequence,) in enumerate(encoded):
                if not len(mask_positions(sequence.input_ids, mask_id)):
                    raise InvalidInput(
                        f"inputs[{index}] has no mask token {tokenizer.mask_token!r} (after "
                        "truncation); put one where a token is to be filled in"
                    )
            return encoded

        # The workers return the mask tokens' logits alone, not [tokens, vocab] an item.
        output = mask_logits_output(mask_id)
        rows, windows, timings = await self._infer.run_windows(
            texts, options, (output,), deadline, split
        )
        start = time.perf_counter()

        def postprocess() -> list[list[MaskFill]]:
            return [
                fill(text_windows[0].input_ids, text_rows[0][output], top_k, restrict, tokenizer)
                for text_windows, text_rows in zip(windows, rows, strict=True)
            ]

        # A softmax over the vocabulary per mask: off the event loop for a long request.
        results = await self._infer.off_loop_if_long(texts, postprocess)
        self._infer.observe_postprocess(start, timings)
        return results, timings

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
        split = self._windows(texts, options, stride, details=False)
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
