"""Step 1 of the pipeline: text -> token ids, with the model's own (fast) tokenizer.

Pure: knows nothing of gRPC or worker processes. Items are encoded without padding;
`pad` applies padding afterwards, so the batcher can pad to its own batches and the
Tokenize RPC can pad as transformers would.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from pipeserve.server.pipeline.inputs import Padding, TextInput

# transformers' name for its once-per-tokenizer warning about a text the model cannot take.
_TOO_LONG_WARNING = "sequence-length-is-longer-than-the-specified-maximum"


@dataclass(frozen=True)
class Encoded:
    """One item's tokenization, unpadded."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Padded:
    """Items padded to one length (or left ragged), as transformers' tokenizer returns them."""

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    tokens: list[list[str]] | None
    offsets: list[list[tuple[int, int]]] | None


class TextTokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, model_max_length: int) -> None:
        self._tokenizer = tokenizer
        # Texts over the limit are refused with a status before they reach the model, so
        # transformers' warning that they would overflow it only misleads the log.
        tokenizer.deprecation_warnings[_TOO_LONG_WARNING] = True
        self.max_length = model_max_length
        self.uses_token_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_token = tokenizer.pad_token or ""
        self.padding_side = tokenizer.padding_side
        # Special tokens the tokenizer adds to a single text and to a pair ([CLS] a [SEP] b [SEP]).
        self._special = (
            tokenizer.num_special_tokens_to_add(pair=False),
            tokenizer.num_special_tokens_to_add(pair=True),
        )

    @classmethod
    def load(cls, model: str, revision: str | None, model_max_length: int) -> "TextTokenizer":
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        if not tokenizer.is_fast:
            raise ValueError(f"{model} has no fast tokenizer; pipeserve needs one")
        # Tokenizers without a sensible model_max_length report a huge sentinel.
        if tokenizer.model_max_length and tokenizer.model_max_length < model_max_length:
            model_max_length = tokenizer.model_max_length
        return cls(tokenizer, model_max_length)

    def special_tokens(self, items: Sequence[object]) -> int:
        """Most special tokens the tokenizer adds to any of `items` (pairs take more)."""
        return self._special[any(isinstance(item, tuple) for item in items)]

    def encode(
        self,
        items: Sequence[TextInput],
        *,
        truncation: bool,
        max_length: int,
        tokens: bool = False,
        offsets: bool = False,
    ) -> list[Encoded]:
        """Encodes texts and pairs (special tokens included), in input order."""
        singles = [i for i, item in enumerate(items) if isinstance(item, str)]
        pairs = [i for i, item in enumerate(items) if not isinstance(item, str)]
        encoded: list[Encoded | None] = [None] * len(items)
        for indices, is_pair in ((singles, False), (pairs, True)):
            if not indices:
                continue
            group = [items[i] for i in indices]
            batch = self._tokenizer(
                [g[0] for g in group] if is_pair else group,
                text_pair=[g[1] for g in group] if is_pair else None,
                truncation=truncation,
                max_length=max_length if truncation else None,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=self.uses_token_type_ids,
                return_offsets_mapping=offsets,
            )
            for row, i in enumerate(indices):
                type_ids = batch["token_type_ids"][row] if self.uses_token_type_ids else None
                encoded[i] = Encoded(
                    input_ids=np.asarray(batch["input_ids"][row], dtype=np.int64),
                    token_type_ids=None if type_ids is None else np.asarray(type_ids, np.int64),
                    tokens=batch.tokens(row) if tokens else None,
                    offsets=[tuple(o) for o in batch["offset_mapping"][row]] if offsets else None,
                )
        return encoded  # type: ignore[return-value]

    def pad(self, items: Sequence[Encoded], padding: Padding, max_length: int) -> Padded:
        """Pads as transformers' tokenizer(padding=...) does, on the tokenizer's side."""
        if padding is Padding.NONE:
            length = None
        elif padding is Padding.MAX_LENGTH:
            length = max(max_length, *(len(e) for e in items))
        else:
            length = max(len(e) for e in items)
        return pad_encodings(
            items, length, self.pad_token_id, self.pad_token, left=self.padding_side == "left"
        )


def _pad_row(values: Sequence, width: int, fill: object, left: bool) -> list:
    filler = [fill] * (width - len(values))
    return filler + list(values) if left else list(values) + filler


def pad_encodings(
    items: Sequence[Encoded], length: int | None, pad_id: int, pad_token: str, left: bool
) -> Padded:
    """Pads every item to `length` (None: no padding, rows keep their own lengths)."""
    rows = [(e, len(e) if length is None else length) for e in items]

    def column(get, fill):
        return [_pad_row(get(e), width, fill, left) for e, width in rows]

    ids = column(lambda e: e.input_ids.tolist(), pad_id)
    mask = column(lambda e: [1] * len(e), 0)
    has_types = all(e.token_type_ids is not None for e in items)
    types = column(lambda e: e.token_type_ids.tolist(), 0) if has_types else None
    has_tokens = all(e.tokens is not None for e in items)
    has_offsets = all(e.offsets is not None for e in items)
    return Padded(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=types,
        tokens=column(lambda e: e.tokens, pad_token) if has_tokens else None,
        offsets=column(lambda e: e.offsets, (0, 0)) if has_offsets else None,
    )
