"""Splitting one call's inputs into requests within the server's limits, and joining the answers.

A server refuses a request with more than `max_items_per_request` items, or more than
`max_tokens_per_request` tokens in all (both in ModelInfo). A call spec that can be split says
how in its `Split`: which repeated field of its request holds the items, an upper bound of each
item's tokens, and how the parsed answers of the parts join into the one answer the call
returns. `plan` cuts a request into parts in input order; `fanout.py` sends them (a few at a
time) and joins their answers. Pure: no I/O.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from google.protobuf.message import Message

from pipeserve.client.results import Encoding, ForwardOutput, ModelInfo
from pipeserve.v1 import pipeserve_pb2 as pb

R = TypeVar("R")

# Tokens a tokenizer adds to a text beyond those of its bytes: [CLS] and [SEP] (two pairs of
# them for a pair), and a SentencePiece word marker of its own before the first character.
_ADDED_TOKENS = 4


def text_tokens(text: str) -> int:
    """An upper bound of the tokens of `text`: every tokenizer pipeserve serves (WordPiece,
    byte-level BPE, SentencePiece) makes at most one token of each UTF-8 byte."""
    return (len(text) if text.isascii() else len(text.encode("utf-8"))) + _ADDED_TOKENS


def item_tokens(item: str | Message) -> int:
    """An upper bound of the tokens of a text, or of a ModelInput or TextInput proto."""
    if isinstance(item, str):
        return text_tokens(item)
    kind = item.WhichOneof("kind")
    if kind == "ids":
        return len(item.ids.input_ids)
    if kind == "pair":
        return text_tokens(item.pair.text) + text_tokens(item.pair.text_pair)
    return text_tokens(item.text)


def token_bound(request: Message, extra: int = 0) -> Callable[[Any, ModelInfo], int]:
    """Each item's tokens at most as `request` has them tokenized: its own, and `extra` (what
    goes with every item: a query, a prompt), within the max_length it truncates to; by
    `stride`, each window of a long text in full."""
    options = request.options
    strided = "stride" in request.DESCRIPTOR.fields_by_name and request.HasField("stride")

    def bound(item: Any, info: ModelInfo) -> int:
        tokens = item_tokens(item) + extra
        window = options.max_length or info.max_length
        if not window:
            return tokens
        if strided:
            step = max(1, window - request.stride - _ADDED_TOKENS)
            return window * (1 + max(0, -(-(tokens - window) // step)))
        return min(tokens, window) if options.truncation else tokens

    return bound


@dataclass(frozen=True)
class Split(Generic[R]):
    """How a call splits: the request's repeated `field` of items, each item's tokens at most
    (`tokens(item, info)`; None: tokens are not what limits it), and `join`, which makes the
    call's answer of its parts' (in input order, each with the index of its first item).
    `adapt`, if given, rewrites the request sent in parts (Tokenize pads them all alike)."""

    field: str
    join: Callable[[list[tuple[int, R]]], R]
    tokens: Callable[[Any, ModelInfo], int] | None = None
    adapt: Callable[[Message, ModelInfo], Message] | None = None


def plan(request: Message, split: Split, info: ModelInfo) -> list[tuple[int, Message]]:
    """`request` cut into requests within `info`'s limits, each with the index of its first
    item; the request itself when it fits. An item over the token limit alone goes alone: the
    server then says what is wrong with it."""
    items = getattr(request, split.field)
    max_items = info.max_items_per_request or len(items)
    max_tokens = info.max_tokens_per_request if split.tokens is not None else 0
    starts, count, tokens = [0], 0, 0
    for index, item in enumerate(items):
        cost = split.tokens(item, info) if max_tokens and split.tokens else 0
        if count and (count == max_items or (max_tokens and tokens + cost > max_tokens)):
            starts.append(index)
            count = tokens = 0
        count, tokens = count + 1, tokens + cost
    if len(starts) == 1:
        return [(0, request)]
    template = type(request)()
    template.CopyFrom(request)
    template.ClearField(split.field)
    if split.adapt is not None:
        template = split.adapt(template, info)
    parts = []
    for start, end in zip(starts, [*starts[1:], len(items)], strict=True):
        part = type(request)()
        part.CopyFrom(template)
        getattr(part, split.field).extend(items[start:end])
        parts.append((start, part))
    return parts


# --- Joins ------------------------------------------------------------------------------------


def concatenated(parts: list[tuple[int, list[Any]]]) -> list[Any]:
    """Per-input results, one list after the other."""
    return [result for _, results in parts for result in results]


def stacked(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """[items, ...] arrays, one after the other."""
    return np.concatenate([array for _, array in parts])


def _padded(arrays: Sequence[np.ndarray]) -> np.ndarray:
    # An output whose second axis differs between parts is per token, padded with zeros to the
    # longest item of its request (the contract): pad the parts to the longest of them all.
    width = max(array.shape[1] for array in arrays)
    return np.concatenate(
        [
            np.pad(array, [(0, 0), (0, width - array.shape[1])] + [(0, 0)] * (array.ndim - 2))
            for array in arrays
        ]
    )


def forward_outputs(parts: list[tuple[int, ForwardOutput]]) -> ForwardOutput:
    """Forward's outputs of the parts as one request's: per-token outputs padded to the
    longest item of all."""
    outputs = [output for _, output in parts]
    joined = {}
    for name, first in outputs[0].items():
        arrays = [output[name] for output in outputs]
        joined[name] = _padded(arrays) if first.ndim >= 2 else np.concatenate(arrays)
    return ForwardOutput(
        joined.items(), np.concatenate([output.sequence_lengths for output in outputs])
    )


def tokenize_split(request: Message) -> Split[list[Encoding]]:
    """Tokenize's Split. Parts padded to the longest of each would differ in width, so a call
    padded to the longest sends its parts padded to one width (its max_length, else the
    model's), with the mask, and cuts what lies beyond the longest encoding of all off again,
    on the side the tokenizer pads."""
    if request.padding != pb.PADDING_LONGEST:
        return Split("inputs", concatenated, token_bound(request))
    mask_asked = request.return_attention_mask

    def adapt(part: Message, info: ModelInfo) -> Message:
        part.padding = pb.PADDING_MAX_LENGTH
        part.options.max_length = part.options.max_length or info.max_length
        part.return_attention_mask = True
        return part

    def join(parts: list[tuple[int, list[Encoding]]]) -> list[Encoding]:
        encodings = concatenated(parts)
        width = len(encodings[0].input_ids)
        longest = max(sum(e.attention_mask) for e in encodings)
        shorter = next((e for e in encodings if sum(e.attention_mask) < width), None)
        left = shorter is not None and shorter.attention_mask[0] == 0
        kept = slice(width - longest, width) if left else slice(0, longest)
        return [
            Encoding(
                input_ids=e.input_ids[kept],
                attention_mask=e.attention_mask[kept] if mask_asked else [],
                token_type_ids=e.token_type_ids[kept],
                tokens=e.tokens[kept],
                offsets=e.offsets[kept],
            )
            for e in encodings
        ]

    return Split("inputs", join, token_bound(request), adapt)
