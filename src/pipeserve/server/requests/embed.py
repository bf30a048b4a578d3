"""The Embed request path: texts (with the checkpoint's prompt) -> the shared batcher and
workers, which pool each item's token states -> sentence-transformers' steps after pooling.

Each text is one item of the shared queue, batched with every other call's items; the request
asks the workers for the pooled embedding (a `schema.Pooled` output), so no per-token state
leaves the worker.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeserve.server.errors import InvalidInput, UnsupportedByModel, quoted
from pipeserve.server.pipeline.embed import (
    SentenceConfig,
    finish,
    load_sentence_config,
)
from pipeserve.server.pipeline.inputs import TextOptions
from pipeserve.server.requests.infer import Infer, Timings
from pipeserve.server.schema import Pooled
from pipeserve.server.settings import Task


@dataclass(frozen=True)
class EmbedResult:
    embeddings: np.ndarray  # [items, dimension], float32
    sequence_lengths: list[int]
    timings: Timings


class Embedder:
    def __init__(self, infer: Infer, revision: str | None) -> None:
        self._infer = infer
        card = infer.card
        self.config: SentenceConfig | None = (
            load_sentence_config(card.name, revision)
            if card.task is Task.FEATURE_EXTRACTION
            else None
        )
        limit = self.config.max_seq_length if self.config else None
        lowercase = self.config is not None and self.config.do_lower_case
        self._tokenizer = card.tokenizer.lowercasing() if lowercase else card.tokenizer
        # The checkpoint's max_seq_length, within what the model accepts.
        self.max_seq_length = min(limit or card.max_length, card.max_length)

    def _check_model(self) -> SentenceConfig:
        card = self._infer.card
        self._infer.require("Embed")
        assert self.config is not None  # loaded for every bare encoder
        if self.config.unsupported is not None:
            raise UnsupportedByModel(
                f"Embed cannot pool {card.name} as sentence-transformers would: "
                f"{self.config.unsupported}"
            )
        return self.config

    def _prompt(self, config: SentenceConfig, prompt: str | None, prompt_name: str | None) -> str:
        """The prompt in force, as encode(prompt=..., prompt_name=...) resolves it: a given
        prompt, even an empty one (no prompt at all), else the named one, else the default."""
        if prompt is not None and prompt_name is not None:
            raise InvalidInput("set prompt or prompt_name, not both")
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in config.prompts:
                known = ", ".join(map(repr, config.prompts))
                raise InvalidInput(
                    f"unknown prompt_name {quoted(prompt_name)}; the model has {known}"
                )
            return config.prompts[prompt_name]
        return config.prompts.get(config.default_prompt_name or "", "")

    def _prompt_length(self, prompt: str, max_length: int) -> int:
        """Tokens of the prompt that pooling leaves out: the prompt encoded alone, less a
        trailing special token ([SEP]), as sentence-transformers measures it."""
        tokenizer = self._tokenizer
        (encoded,) = tokenizer.encode([prompt], truncation=True, max_length=max_length)
        ids = encoded.input_ids
        return len(ids) - (len(ids) > 0 and int(ids[-1]) in tokenizer.special_ids)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool,
        truncate_dim: int | None,
        prompt: str | None,
        prompt_name: str | None,
        options: TextOptions,
        deadline: float | None,
    ) -> EmbedResult:
        config = self._check_model()
        dimension = self._infer.card.hidden_size
        truncate_dim = truncate_dim or config.truncate_dim
        if truncate_dim is not None and truncate_dim > dimension:
            raise InvalidInput(
                f"truncate_dim {truncate_dim} is larger than the embedding's {dimension} dimensions"
            )
        if options.max_length is None:
            options = replace(options, max_length=self.max_seq_length)
        applied = self._prompt(config, prompt, prompt_name)
        items = [applied + text for text in texts] if applied else list(texts)
        skip = 0
        if applied and not config.include_prompt:
            skip = self._prompt_length(applied, options.max_length)
        output = Pooled(config.pooling, skip)
        outputs, timings = await self._infer.run(
            items, options, (output,), deadline, tokenizer=self._tokenizer
        )
        start = time.perf_counter()
        embeddings = finish(outputs[output], config, truncate_dim, normalize)
        self._infer.observe_postprocess(start, timings)
        return EmbedResult(embeddings, list(outputs.lengths), timings)
