"""Checks on a request's items before anything is tokenized or queued.

Every message names the offending item and limit, so a caller can fix its request.
Nothing that fails here ever reaches the tokenizer or a worker.
"""

import math
from collections.abc import Collection, Mapping, Sequence

from pipeserve.server.errors import InvalidInput, TooLarge, quoted
from pipeserve.server.pipeline.inputs import ModelInput, TextOptions, TokenIds

# Most bytes a protobuf message can hold, whatever --max-message-bytes says.
PROTOBUF_MAX_BYTES = 2**31 - 1
# Most bytes of an answer's fields beside its tensors' data: per output its tags, lengths,
# dtype and shape (besides its name), per item its length (a varint), and the message's own.
_BYTES_PER_OUTPUT = 72
_BYTES_PER_ITEM = 10
_BYTES_PER_ANSWER = 8


def check_items(items: Sequence[ModelInput], max_items: int | None, max_text_chars: int) -> None:
    """`max_items` None: the caller's items were counted already (the pairs made of them)."""
    if not items:
        raise InvalidInput("inputs is empty: send at least one item")
    if max_items is not None and len(items) > max_items:
        raise TooLarge(
            f"too many items: {len(items)} in one request, limit max_items_per_request={max_items}"
        )
    for index, item in enumerate(items):
        if isinstance(item, TokenIds):
            continue
        texts = (
            (("text", item),)
            if isinstance(item, str)
            else (("text", item[0]), ("text_pair", item[1]))
        )
        for field, text in texts:
            if not text:
                raise InvalidInput(f"inputs[{index}].{field} is empty")
            if len(text) > max_text_chars:
                raise TooLarge(
                    f"inputs[{index}].{field} has {len(text)} characters, limit "
                    f"max_text_chars={max_text_chars}"
                )


def check_token_ids(
    index: int, ids: TokenIds, vocab_size: int, max_length: int, type_vocab_size: int
) -> None:
    where = f"inputs[{index}].ids"
    count = len(ids.input_ids)
    if count == 0:
        raise InvalidInput(f"{where}.input_ids is empty")
    if count > max_length:
        raise InvalidInput(f"{where} has {count} tokens; the model accepts at most {max_length}")
    low, high = int(ids.input_ids.min()), int(ids.input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise InvalidInput(
            f"{where}.input_ids has id {bad}, outside the vocabulary [0, {vocab_size})"
        )
    if ids.token_type_ids is not None:
        if len(ids.token_type_ids) != count:
            raise InvalidInput(
                f"{where}.token_type_ids has {len(ids.token_type_ids)} ids for {count} tokens"
            )
        if int(ids.token_type_ids.min()) < 0 or int(ids.token_type_ids.max()) >= type_vocab_size:
            raise InvalidInput(f"{where}.token_type_ids must lie in [0, {type_vocab_size})")


def resolve_max_length(options: TextOptions, model_max_length: int, special_tokens: int) -> int:
    """The length limit in force. It must leave room for at least one token of text beside
    the special tokens ([CLS], [SEP]...), or the tokenizer would silently not truncate."""
    if options.max_length is None:
        return model_max_length
    if not special_tokens < options.max_length <= model_max_length:
        raise InvalidInput(
            f"max_length {options.max_length} is outside [{special_tokens + 1}, "
            f"{model_max_length}] (the model adds {special_tokens} special tokens; "
            f"{model_max_length} is its maximum)"
        )
    return options.max_length


def check_outputs(requested: Sequence[str], available: Sequence[str]) -> None:
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise InvalidInput(
            f"unknown output {quoted(unknown[0])}; this model has: {', '.join(available)}"
        )
    seen: set[str] = set()
    for name in requested:
        if name in seen:
            raise InvalidInput(f"output {quoted(name)} is asked for more than once")
        seen.add(name)


def check_total_tokens(total: int, limit: int, counted: int | None = None, of: int = 0) -> None:
    """`counted` items of `of` make `total` tokens (None: all of them): tokenizing stops at
    the first part of a request that passes the limit."""
    if total <= limit:
        return
    if counted is None or counted >= of:
        raise TooLarge(f"request has {total} tokens in all, limit max_tokens_per_request={limit}")
    raise TooLarge(
        f"request has over {limit} tokens: {total} in its first {counted} of {of} items, limit "
        f"max_tokens_per_request={limit}"
    )


def check_pairs(texts: int, labels: int, max_items: int, max_queued_items: int) -> None:
    """Zero-shot's limits: what the caller sent, texts and labels, counts against
    max_items_per_request; the pairs they make (one model input each) must fit the queue."""
    for count, what in ((texts, "texts"), (labels, "candidate_labels")):
        if count > max_items:
            raise TooLarge(
                f"too many {what}: {count} in one request, limit max_items_per_request={max_items}"
            )
    if texts * labels > max_queued_items:
        raise TooLarge(
            f"{texts} texts x {labels} candidate_labels make {texts * labels} (text, hypothesis) "
            f"pairs, each one model input; the queue holds at most max_queued_items="
            f"{max_queued_items}: send fewer texts in one request"
        )


def check_answer_bytes(
    items: int,
    longest: int,
    shapes: Mapping[str, tuple[int, ...]],
    token_level: Collection[str],
    itemsize: int,
    max_message_bytes: int,
) -> None:
    """Refuses an answer of `items` rows (token-level outputs padded to `longest` tokens),
    `shapes` giving each output's shape past those axes, that could not be sent: larger than
    --max-message-bytes, or than a protobuf message can be."""
    values = {
        name: items * (longest if name in token_level else 1) * math.prod(shape)
        for name, shape in shapes.items()
    }
    fields = sum(_BYTES_PER_OUTPUT + len(name.encode()) for name in shapes)
    size = sum(values.values()) * itemsize + fields + _BYTES_PER_ITEM * items + _BYTES_PER_ANSWER
    limit = min(max_message_bytes, PROTOBUF_MAX_BYTES)
    if size <= limit:
        return
    largest = max(values, key=values.__getitem__)
    dims = [items, *([longest] if largest in token_level else []), *shapes[largest]]
    bound = (
        f"--max-message-bytes={max_message_bytes}"
        if limit == max_message_bytes
        else f"the {PROTOBUF_MAX_BYTES} bytes a protobuf message holds"
    )
    raise TooLarge(
        f"the answer would take about {size} bytes ({largest} alone is "
        f"{' x '.join(map(str, dims))} x {itemsize} bytes), over {bound}: ask for fewer "
        "outputs or items, shorter texts (max_length), output_dtype float16, or a larger "
        "--max-message-bytes"
    )
