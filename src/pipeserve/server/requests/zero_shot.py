"""The ClassifyZeroShot request path, free of gRPC: each (text, hypothesis) pair (one item of
the shared batcher) -> `Infer` -> an NLI model's logits -> each text's labels, as transformers'
zero-shot-classification pipeline scores them (`pipeline/zero_shot.py`).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pipeserve.server.errors import InvalidInput, TooLarge
from pipeserve.server.pipeline.classify import LabelScore
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.pipeline.validation import check_pairs, resolve_max_length
from pipeserve.server.pipeline.zero_shot import (
    check_hypothesis_room,
    check_template,
    hypotheses,
    label_scores,
)
from pipeserve.server.requests.infer import Infer, Timings


@dataclass(frozen=True)
class ZeroShotResult:
    labels: list[list[LabelScore]]
    timings: Timings


class ZeroShot:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer

    def _check_hypotheses(
        self, labels: Sequence[str], formatted: list[str], options: TextOptions
    ) -> None:
        tokenizer = self._infer.card.tokenizer
        single, pair = tokenizer.special_tokens(formatted), tokenizer.special_tokens([("", "")])
        max_length = resolve_max_length(options, self._infer.card.max_length, pair)
        # Untruncated: a hypothesis past any max_length is still measured whole.
        encoded = tokenizer.encode(formatted, truncation=False, max_length=max_length)
        check_hypothesis_room(labels, [len(e) - single for e in encoded], pair, max_length)

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
        settings = self._infer.settings
        if len(labels) > settings.max_candidate_labels:
            raise TooLarge(
                f"too many candidate_labels: {len(labels)} in one request, limit "
                f"max_candidate_labels={settings.max_candidate_labels}"
            )
        check_pairs(
            len(texts), len(labels), settings.max_items_per_request, settings.max_queued_items
        )
        check_template(template, labels, settings.max_template_chars, settings.max_text_chars)

        def made() -> list[str]:
            formatted = hypotheses(labels, template)
            # The pipeline truncates the text only: the hypothesis stays whole.
            if options.truncation:
                self._check_hypotheses(labels, formatted, options)
            return formatted

        chars = sum(map(len, labels)) + len(labels) * len(template)
        formatted = await self._infer.off_loop_if(chars, made)
        pairs = [(text, hypothesis) for text in texts for hypothesis in formatted]
        logits, timings = await self._infer.logits(
            pairs, replace(options, only_first=True), deadline, count_items=False
        )
        start = time.perf_counter()
        shaped = logits.reshape(len(texts), len(formatted), -1)
        assert card.entailment_id is not None  # require() refused a model without one
        results = label_scores(shaped, card.entailment_id, multi_label, labels)
        self._infer.observe_postprocess(start, timings)
        return ZeroShotResult(results, timings)
