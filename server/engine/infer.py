"""The request path, free of gRPC: validate -> tokenize (off the event loop) -> queue ->
await each item's outputs from the batcher and workers -> assemble or postprocess."""

import asyncio
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from pipeserve.server.engine.queue import Entry, Queue
from pipeserve.server.errors import InvalidInput, Unavailable, UnsupportedByModel
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.inputs import (
    EncodeFlags,
    ModelInput,
    TextInput,
    TextOptions,
    TokenIds,
)
from pipeserve.server.pipeline.model_card import ModelCard
from pipeserve.server.pipeline.postprocess import (
    LabelScore,
    ScoreFunction,
    apply_score_function,
    top_labels,
)
from pipeserve.server.pipeline.tokenize import Encoded, Padded
from pipeserve.server.pipeline.validation import (
    check_items,
    check_outputs,
    check_token_ids,
    check_total_tokens,
    resolve_max_length,
)
from pipeserve.server.settings import Settings, Task
from pipeserve.server.workers.pool import ItemOutput, WorkerPool


@dataclass
class Timings:
    """Where a request's time went, in milliseconds (the slowest item for queue/forward)."""

    tokenize_ms: float = 0.0
    queue_ms: float = 0.0
    forward_ms: float = 0.0


@dataclass(frozen=True)
class ForwardResult:
    outputs: dict[str, np.ndarray]
    sequence_lengths: np.ndarray
    timings: Timings


@dataclass(frozen=True)
class ClassifyResult:
    labels: list[list[LabelScore]]
    timings: Timings


class Infer:
    def __init__(
        self,
        card: ModelCard,
        queue: Queue,
        pool: WorkerPool,
        settings: Settings,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self.card = card
        self._metrics = metrics
        self._queue = queue
        self._pool = pool
        self._settings = settings
        self._executor = executor

    @property
    def queued_items(self) -> int:
        return len(self._queue)

    async def tokenize(
        self, items: Sequence[TextInput], options: TextOptions, flags: EncodeFlags
    ) -> Padded:
        max_length = self._admit(items, options)
        encoded = await self._encode(items, options, max_length, flags.tokens, flags.offsets)
        self._check_lengths(encoded, range(len(items)))
        check_total_tokens(sum(map(len, encoded)), self._settings.max_tokens_per_request)
        # Padding up to 256 x 512 ids (and tokens, offsets) is list work: not on the loop.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.card.tokenizer.pad, encoded, options.padding, max_length
        )

    async def forward(
        self,
        items: Sequence[ModelInput],
        outputs: Sequence[str],
        options: TextOptions,
        deadline: float | None,
    ) -> ForwardResult:
        model = self._pool.model
        check_outputs(outputs, model.outputs)
        names = tuple(outputs) or model.default_outputs
        sequences, timings = await self._sequences(items, options)
        results = await self._run(sequences, names, deadline, timings)
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        assembled = {
            name: _stack([r.outputs[name] for r in results], name in model.token_level)
            for name in names
        }
        return ForwardResult(assembled, lengths, timings)

    async def classify(
        self,
        items: Sequence[ModelInput],
        function: ScoreFunction | None,
        top_k: int | None,
        options: TextOptions,
        deadline: float | None,
    ) -> ClassifyResult:
        if self.card.task is not Task.TEXT_CLASSIFICATION:
            raise UnsupportedByModel(
                f"Classify needs a sequence-classification model; {self.card.name} is "
                f"served as {self.card.task}. Use Forward instead."
            )
        sequences, timings = await self._sequences(items, options)
        results = await self._run(sequences, ("logits",), deadline, timings)
        start = time.perf_counter()
        logits = np.stack([r.outputs["logits"] for r in results])
        scores = apply_score_function(logits, function or self.card.score_function)
        labels = [top_labels(row, self.card.id2label, top_k) for row in scores]
        self._metrics.observe_stages(postprocess=(time.perf_counter() - start) * 1000)
        return ClassifyResult(labels, timings)

    async def _encode(
        self,
        items: Sequence[TextInput],
        options: TextOptions,
        max_length: int,
        tokens: bool = False,
        offsets: bool = False,
    ) -> list[Encoded]:
        def encode() -> list[Encoded]:
            return self.card.tokenizer.encode(
                items,
                truncation=options.truncation,
                max_length=max_length,
                tokens=tokens,
                offsets=offsets,
            )

        return await asyncio.get_running_loop().run_in_executor(self._executor, encode)

    def _admit(self, items: Sequence[ModelInput], options: TextOptions) -> int:
        """Checks the request's size limits; returns the length limit for its texts."""
        check_items(items, self._settings.max_items_per_request, self._settings.max_text_chars)
        return resolve_max_length(
            options, self.card.max_length, self.card.tokenizer.special_tokens(items)
        )

    def _check_lengths(self, encoded: Sequence[Encoded], indices: Iterable[int]) -> None:
        """Refuses untruncated items longer than the model can take."""
        for index, enc in zip(indices, encoded, strict=True):
            if len(enc) > self.card.max_length:
                raise InvalidInput(
                    f"inputs[{index}] has {len(enc)} tokens; the model accepts at most "
                    f"{self.card.max_length} (enable truncation to cut it)"
                )

    async def _sequences(
        self, items: Sequence[ModelInput], options: TextOptions
    ) -> tuple[list[Encoded], Timings]:
        """Validates items and turns each into unpadded ids; texts are tokenized here."""
        if self._pool.alive == 0:
            raise Unavailable("no model worker is alive; retry shortly")
        max_length = self._admit(items, options)
        sequences: list[Encoded | None] = [None] * len(items)
        text_indices = []
        for index, item in enumerate(items):
            if isinstance(item, TokenIds):
                check_token_ids(
                    index,
                    item,
                    self.card.vocab_size,
                    self.card.max_length,
                    self.card.type_vocab_size,
                )
                sequences[index] = Encoded(item.input_ids, item.token_type_ids)
            else:
                text_indices.append(index)
        start = time.perf_counter()
        if text_indices:
            texts = [items[i] for i in text_indices]
            encoded = await self._encode(texts, options, max_length)  # type: ignore[arg-type]
            self._check_lengths(encoded, text_indices)
            for index, enc in zip(text_indices, encoded, strict=True):
                sequences[index] = enc
        check_total_tokens(
            sum(map(len, sequences)),  # type: ignore[arg-type]
            self._settings.max_tokens_per_request,
        )
        return sequences, Timings(tokenize_ms=(time.perf_counter() - start) * 1000)  # type: ignore[return-value]

    async def _run(
        self,
        sequences: list[Encoded],
        outputs: tuple[str, ...],
        deadline: float | None,
        timings: Timings,
    ) -> list[ItemOutput]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = [
            Entry(s.input_ids, s.token_type_ids, outputs, loop.create_future(), now, deadline)
            for s in sequences
        ]
        if self._pool.alive == 0:  # checked again: workers may have died while tokenizing
            raise Unavailable("no model worker is alive; retry shortly")
        self._queue.put(entries, now)
        # Cancelling this call cancels the gather and so every entry's future, which
        # tells the queue to drop entries not yet sent to a worker.
        try:
            results: list[ItemOutput] = await asyncio.gather(*(e.future for e in entries))
        except Exception:
            for entry in entries:  # one item failed the call: its siblings need no compute
                entry.future.cancel()
            raise
        timings.queue_ms = max(r.queue_ms for r in results)
        timings.forward_ms = max(r.forward_ms for r in results)
        self._metrics.observe_stages(
            tokenize=timings.tokenize_ms, queue=timings.queue_ms, forward=timings.forward_ms
        )
        return results


def _stack(rows: list[np.ndarray], token_level: bool) -> np.ndarray:
    """Stacks per-item outputs; token-level ones are zero-padded to the longest item."""
    if not token_level:
        return np.stack(rows)
    longest = max(len(r) for r in rows)
    out = np.zeros((len(rows), longest, *rows[0].shape[1:]), dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
