"""The FillMask request path, free of gRPC: each text (one item of the shared batcher) ->
`Infer` -> its mask tokens' logits alone -> candidates, as transformers' fill-mask pipeline
gives them (`pipeline/fill_mask.py`).
"""

import time
from collections.abc import Sequence

from pipeserve.server.errors import InvalidInput, TooLarge, UnsupportedByModel
from pipeserve.server.pipeline.fill_mask import (
    DEFAULT_TOP_K,
    MaskFill,
    fill,
    mask_positions,
    target_ids,
)
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.requests.infer import Infer, Timings
from pipeserve.server.schema import MaskRows


class FillMask:
    def __init__(self, infer: Infer) -> None:
        self._infer = infer
        self._card = infer.card

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
        limit = self._infer.settings.max_targets
        if len(targets) > limit:
            raise TooLarge(
                f"too many targets: {len(targets)} in one request, limit max_targets={limit}"
            )
        # Each target is a tokenizer call: as costly as 64 characters of text, say.
        chars = sum(map(len, targets)) + 64 * len(targets)
        restrict = await self._infer.off_loop_if(chars, lambda: target_ids(targets, tokenizer))
        tokenize = self._infer.windows(options, None, details=False)

        def split(chunk: Sequence[str], first: int, max_length: int) -> list[list[Encoded]]:
            encoded = tokenize(chunk, first, max_length)
            for index, (sequence,) in enumerate(encoded, first):
                if not len(mask_positions(sequence.input_ids, mask_id)):
                    raise InvalidInput(
                        f"inputs[{index}] has no mask token {tokenizer.mask_token!r} (after "
                        "truncation); put one where a token is to be filled in"
                    )
            return encoded

        # The workers return the mask tokens' logits alone, not [tokens, vocab] an item.
        output = MaskRows(mask_id)
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
