"""The request path, free of gRPC: validate -> admit -> tokenize -> queue -> await the
request's outputs from the batcher and workers -> assemble or postprocess.

A call takes its places in the queue (an admission permit) before it is tokenized, so an
overloaded server refuses at once. A short request is tokenized right on the event loop, where
it costs less than the hop to a thread would; a long one goes to the tokenizer thread.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from pipeserve.server import tracing
from pipeserve.server.engine.core import EngineCalls
from pipeserve.server.engine.queue import Admission
from pipeserve.server.errors import InvalidInput, Unavailable
from pipeserve.server.metrics import Metrics
from pipeserve.server.model.card import ModelCard
from pipeserve.server.model.served import require_rpc
from pipeserve.server.pipeline.inputs import (
    EncodeFlags,
    ModelInput,
    TextInput,
    TextOptions,
    TokenIds,
)
from pipeserve.server.pipeline.tokenize import Encoded, Padded, TextTokenizer
from pipeserve.server.pipeline.validation import (
    check_answer_bytes,
    check_items,
    check_outputs,
    check_token_ids,
    check_total_tokens,
    resolve_max_length,
)
from pipeserve.server.pipeline.windows import check_stride
from pipeserve.server.schema import Output, Outputs
from pipeserve.server.settings import Settings

# Requests with at most this many characters are tokenized on the event loop (tens of
# microseconds); longer ones in the tokenizer thread, so the loop never stalls on them.
_INLINE_CHARS = 4096

_T = TypeVar("_T")


@dataclass
class Timings:
    """Where a request's time went, in milliseconds (the slowest item for queue/forward)."""

    tokenize_ms: float = 0.0
    queue_ms: float = 0.0
    forward_ms: float = 0.0
    postprocess_ms: float = 0.0


@dataclass(frozen=True)
class ForwardResult:
    outputs: dict[str, np.ndarray]
    sequence_lengths: np.ndarray
    timings: Timings


class Infer:
    def __init__(
        self,
        card: ModelCard,
        engine: EngineCalls,
        settings: Settings,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self.card = card
        self._metrics = metrics.for_model(settings.model_name)
        self._engine = engine
        self._settings = settings
        self._executor = executor

    async def tokenize(
        self, items: Sequence[TextInput], options: TextOptions, flags: EncodeFlags
    ) -> tuple[Padded, Timings]:
        """The items' encodings, padded as `options` say, and the time it took."""
        max_length = self._check(items, options)
        start = time.perf_counter()
        with tracing.span("tokenize"):
            encoded = await self._encode(items, options, max_length, flags.tokens, flags.offsets)
            self._check_lengths(encoded, range(len(items)))
            check_total_tokens(sum(map(len, encoded)), self._settings.max_tokens_per_request)
            # Padding up to 256 x 512 ids (and tokens, offsets) is list work: not on the loop.
            padded = await self.off_loop_if_long(
                items, lambda: self.card.tokenizer.pad(encoded, options.padding, max_length)
            )
        return padded, Timings(tokenize_ms=(time.perf_counter() - start) * 1000)

    async def forward(
        self,
        items: Sequence[ModelInput],
        outputs: Sequence[str],
        options: TextOptions,
        deadline: float | None,
        itemsize: int = 4,
    ) -> ForwardResult:
        """The named outputs of `items`, each value `itemsize` bytes in the answer: one that
        could not be sent is refused once tokenized, before it is queued."""
        model = self._engine.model
        check_outputs(outputs, model.outputs)
        names = tuple(outputs) or model.default_outputs
        shapes = {name: model.item_shapes[name] for name in names if name in model.item_shapes}

        async def sequences(max_length: int) -> list[Encoded]:
            encoded = await self._sequences(items, options, max_length, self.card.tokenizer)
            check_answer_bytes(
                len(encoded),
                max(map(len, encoded)),
                shapes,
                model.token_level,
                itemsize,
                self._settings.max_message_bytes,
            )
            return encoded

        outputs, timings = await self._submit(items, options, names, deadline, sequences)
        arrays = {name: outputs[name] for name in names}
        return ForwardResult(arrays, np.array(outputs.lengths, dtype=np.int64), timings)

    async def logits(
        self,
        items: Sequence[ModelInput],
        options: TextOptions,
        deadline: float | None,
        count_items: bool = True,
    ) -> tuple[np.ndarray, Timings]:
        """The items' logits [items, labels] (a classifier's head), and where the time went;
        `count_items` as in `_check`."""
        outputs, timings = await self.run(
            items, options, ("logits",), deadline, count_items=count_items
        )
        return outputs["logits"], timings

    @property
    def settings(self) -> Settings:
        return self._settings

    def require(self, rpc: str) -> None:
        """Refuses `rpc` (FAILED_PRECONDITION) unless the loaded model serves it."""
        require_rpc(rpc, self.card)

    def observe_postprocess(self, start: float, timings: Timings) -> None:
        """Counts the postprocessing that began at perf_counter() `start`, in the metrics and
        in the request's `timings`."""
        timings.postprocess_ms = (time.perf_counter() - start) * 1000
        self._metrics.observe_stages(postprocess=timings.postprocess_ms)
        tracing.record("postprocess", start)

    async def _encode(
        self,
        items: Sequence[TextInput],
        options: TextOptions,
        max_length: int,
        tokens: bool = False,
        offsets: bool = False,
        tokenizer: TextTokenizer | None = None,
    ) -> list[Encoded]:
        chosen = tokenizer or self.card.tokenizer

        def encode() -> list[Encoded]:
            return chosen.encode(
                items,
                truncation=options.truncation,
                max_length=max_length,
                only_first=options.only_first,
                tokens=tokens,
                offsets=offsets,
            )

        return await self.off_loop_if_long(items, encode)

    async def off_loop_if_long(self, items: Sequence[TextInput], work: Callable[[], _T]) -> _T:
        """`work()` on the event loop for a short request, in the tokenizer thread otherwise."""
        chars = sum(len(i) if isinstance(i, str) else len(i[0]) + len(i[1]) for i in items)
        if chars <= _INLINE_CHARS:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _check(
        self, items: Sequence[ModelInput], options: TextOptions, count_items: bool = True
    ) -> int:
        """Checks the request's size limits; returns the length limit for its texts.
        `count_items` False: the caller's items were counted already (pairs made of them)."""
        max_items = self._settings.max_items_per_request if count_items else None
        check_items(items, max_items, self._settings.max_text_chars)
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

    def _check_alive(self) -> None:
        if self._engine.alive == 0:
            raise Unavailable("no model worker is alive; retry shortly")

    async def run(
        self,
        items: Sequence[ModelInput],
        options: TextOptions,
        outputs: tuple[Output, ...],
        deadline: float | None,
        *,
        tokenizer: TextTokenizer | None = None,
        count_items: bool = True,
    ) -> tuple[Outputs, Timings]:
        """The items' outputs, stacked, and where the time went. Texts are tokenized by
        `tokenizer` (the model's by default); `count_items` as in `_check`."""
        chosen = tokenizer or self.card.tokenizer
        return await self._submit(
            items,
            options,
            outputs,
            deadline,
            lambda limit: self._sequences(items, options, limit, chosen),
            count_items,
        )

    def windows(
        self, texts: Sequence[str], options: TextOptions, stride: int | None, details: bool
    ) -> Callable[[int], list[list[Encoded]]]:
        """`split` for run_windows: each text's windows (or its one sequence)."""
        tokenizer = self.card.tokenizer

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

    async def run_windows(
        self,
        texts: Sequence[str],
        options: TextOptions,
        outputs: tuple[Output, ...],
        deadline: float | None,
        split: Callable[[int], list[list[Encoded]]],
    ) -> tuple[list[list[dict[Output, np.ndarray]]], list[list[Encoded]], Timings]:
        """As `run`, for texts that may each become several sequences (windows of a long
        text): `split(max_length)` tokenizes them, each into its sequences. Returns each
        text's outputs and sequences, window by window, and where the time went."""
        windows: list[list[Encoded]] = []

        async def sequences(max_length: int) -> list[Encoded]:
            windows.extend(await self.off_loop_if_long(texts, lambda: split(max_length)))
            self._check_lengths([w[0] for w in windows], range(len(texts)))
            return [s for w in windows for s in w]

        stacked, timings = await self._submit(texts, options, outputs, deadline, sequences)
        grouped, start = [], 0
        for item in windows:
            grouped.append([stacked.item(i) for i in range(start, start + len(item))])
            start += len(item)
        return grouped, windows, timings

    async def _submit(
        self,
        items: Sequence[ModelInput],
        options: TextOptions,
        outputs: tuple[Output, ...],
        deadline: float | None,
        tokenize: Callable[[int], Awaitable[list[Encoded]]],
        count_items: bool = True,
    ) -> tuple[Outputs, Timings]:
        """Admits the items, makes their sequences with `tokenize(max_length)`, queues them and
        returns the sequences' outputs and where the time went."""
        with tracing.span("admission"):
            self._check_alive()
            max_length = self._check(items, options, count_items)
            permit = self._engine.admit(len(items))
        more: Admission | None = None
        try:
            start = time.perf_counter()
            with tracing.span("tokenize"):
                sequences = await tokenize(max_length)
                check_total_tokens(sum(map(len, sequences)), self._settings.max_tokens_per_request)
            timings = Timings(tokenize_ms=(time.perf_counter() - start) * 1000)
            if len(sequences) > len(items):  # windows: their places, now that they are known
                more = self._engine.admit(len(sequences) - len(items))
            self._check_alive()  # again: workers may have died while tokenizing
            request = self._engine.submit(
                sequences, outputs, deadline, permit, tracing.traceparent()
            )
        finally:
            permit.release()
            if more is not None:
                more.release()
        try:
            outputs = await request.future
        except asyncio.CancelledError:  # the caller left, or its deadline passed
            self._engine.withdraw(request)
            raise
        timings.queue_ms, timings.forward_ms = request.queue_ms, request.forward_ms
        self._metrics.observe_stages(
            tokenize=timings.tokenize_ms, queue=timings.queue_ms, forward=timings.forward_ms
        )
        return outputs, timings

    async def _sequences(
        self,
        items: Sequence[ModelInput],
        options: TextOptions,
        max_length: int,
        tokenizer: TextTokenizer,
    ) -> list[Encoded]:
        """Turns each item into unpadded ids, checked; texts are tokenized here."""
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
        if text_indices:
            texts = [items[i] for i in text_indices]
            encoded = await self._encode(  # type: ignore[arg-type]
                texts, options, max_length, tokenizer=tokenizer
            )
            self._check_lengths(encoded, text_indices)
            for index, enc in zip(text_indices, encoded, strict=True):
                sequences[index] = enc
        return sequences  # type: ignore[return-value]
