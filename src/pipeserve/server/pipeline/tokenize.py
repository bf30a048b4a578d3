"""Step 1 of the pipeline: text -> token ids, with the model's own (fast) tokenizer.

Pure: knows nothing of gRPC or worker processes. Items are encoded without padding;
`pad` applies padding afterwards, so the batcher can pad to its own batches and the
Tokenize RPC can pad as transformers would.
"""

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Encoding, Tokenizer, normalizers

from pipeserve.server.pipeline.inputs import Padding, TextInput

if TYPE_CHECKING:  # transformers imports torch: loaded with the first tokenizer, not before
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Encoded:
    """One item's tokenization, unpadded."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    tokens: list[str] | None = None
    offsets: list[tuple[int, int]] | None = None
    # 1 for the special tokens the tokenizer added ([CLS], [SEP]), when asked for.
    special_tokens_mask: list[int] | None = None

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
    """Encodes with the fast tokenizer's Rust backend directly, set up as transformers'
    `tokenizer(...)` sets it (truncation, no padding, special tokens), which gives the same ids
    at a fifth of the cost for a short text. The backend keeps its truncation as state, so each
    thread that encodes gets its own copy."""

    def __init__(
        self, tokenizer: "PreTrainedTokenizerBase", model_max_length: int, lowercase: bool = False
    ) -> None:
        # Decoding (words of entities, filled-in masks) goes through transformers' own methods,
        # whose clean-ups the pipelines' results carry; nothing here changes its state.
        self.hf = tokenizer
        self._backend_json = _lowercasing(tokenizer.backend_tokenizer, lowercase).to_str()
        self._split_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        self._truncation_side = tokenizer.truncation_side
        self._local = threading.local()
        self.max_length = model_max_length
        self.uses_token_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_token = tokenizer.pad_token or ""
        self.special_ids = frozenset(tokenizer.all_special_ids)
        self.padding_side = tokenizer.padding_side
        self.unk_token_id = tokenizer.unk_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.mask_token = tokenizer.mask_token or ""
        # Whether tokens carry a continuing-subword prefix ("##"), by which the
        # token-classification pipeline tells a word's pieces apart.
        self.word_aware = bool(
            getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None)
        )
        # Special tokens the tokenizer adds to a single text and to a pair ([CLS] a [SEP] b [SEP]).
        self._special = (
            tokenizer.num_special_tokens_to_add(pair=False),
            tokenizer.num_special_tokens_to_add(pair=True),
        )

    @classmethod
    def load(cls, model: str, revision: str | None, model_max_length: int) -> "TextTokenizer":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        if not tokenizer.is_fast:
            raise ValueError(f"{model} has no fast tokenizer; pipeserve needs one")
        # Tokenizers without a sensible model_max_length report a huge sentinel.
        if tokenizer.model_max_length and tokenizer.model_max_length < model_max_length:
            model_max_length = tokenizer.model_max_length
        return cls(tokenizer, model_max_length)

    def lowercasing(self) -> "TextTokenizer":
        """This tokenizer lowercasing first, as sentence-transformers sets up the tokenizer of
        a checkpoint saved with do_lower_case."""
        return TextTokenizer(self.hf, self.max_length, lowercase=True)

    def _backend(
        self, truncation: bool, max_length: int, stride: int = 0, only_first: bool = False
    ) -> Tokenizer:
        local = self._local
        backend: Tokenizer | None = getattr(local, "backend", None)
        if backend is None:
            backend = Tokenizer.from_str(self._backend_json)
            backend.no_padding()
            backend.encode_special_tokens = self._split_special_tokens
            local.backend, local.setup = backend, None
        # Reading the backend's settings back costs more than encoding a short text.
        setup = (truncation, max_length, stride, only_first)
        if local.setup == setup:
            return backend
        local.setup = setup
        if not truncation:
            if backend.truncation is not None:
                backend.no_truncation()
            return backend
        target = {
            "max_length": max_length,
            "stride": stride,
            "strategy": "only_first" if only_first else "longest_first",
            "direction": self._truncation_side,
        }
        current = backend.truncation
        if current is None or {k: current.get(k) for k in target} != target:
            backend.enable_truncation(**target)
        return backend

    def special_tokens(self, items: Sequence[object]) -> int:
        """Most special tokens the tokenizer adds to any of `items` (pairs take more)."""
        return self._special[any(isinstance(item, tuple) for item in items)]

    def encode(
        self,
        items: Sequence[TextInput],
        *,
        truncation: bool,
        max_length: int,
        only_first: bool = False,
        tokens: bool = False,
        offsets: bool = False,
    ) -> list[Encoded]:
        """Encodes texts and pairs (special tokens included), in input order; `only_first`
        truncates only the first text of a pair."""
        backend = self._backend(truncation, max_length, only_first=only_first)
        batch = list(items)
        # The faster call leaves the token strings and offsets empty.
        full = tokens or offsets
        encodings = backend.encode_batch(batch) if full else backend.encode_batch_fast(batch)
        return [self._encoded(e, tokens=tokens, offsets=offsets) for e in encodings]

    def encode_windows(
        self,
        texts: Sequence[str],
        *,
        truncation: bool,
        max_length: int,
        stride: int | None,
        details: bool = False,
    ) -> list[list[Encoded]]:
        """Each text's windows: with `stride`, every window of at most `max_length` tokens
        that covers it, each overlapping the one before by `stride` tokens (a tokenizer's
        return_overflowing_tokens); without, its one sequence, as `encode` gives it. `details`
        adds tokens, offsets into the text and the special tokens mask."""
        windowed = stride is not None
        backend = self._backend(truncation or windowed, max_length, stride or 0)
        batch = list(texts)
        encodings = backend.encode_batch(batch) if details else backend.encode_batch_fast(batch)
        return [
            [
                self._encoded(w, tokens=details, offsets=details, special=details)
                for w in ([e, *e.overflowing] if windowed else [e])
            ]
            for e in encodings
        ]

    def window_tokens(self, texts: Sequence[str], max_length: int, stride: int) -> list[int]:
        """How many tokens `encode_windows` would make of each text with `stride`, windows'
        special tokens included, from one untruncated pass that keeps only the lengths: a
        stride that barely moves makes thousands of windows of a text, which must be refused
        before they exist."""
        special = self._special[0]
        room = max_length - special
        step = room - stride
        counts = []
        for e in self._backend(False, 0).encode_batch_fast(list(texts), add_special_tokens=False):
            n = len(e.ids)
            windows = 1 if n <= room else 1 + math.ceil((n - room) / step)
            # Every window after the first repeats `stride` tokens of the one before it.
            counts.append(n + (windows - 1) * stride + windows * special)
        return counts

    def _encoded(
        self, e: Encoding, *, tokens: bool, offsets: bool, special: bool = False
    ) -> Encoded:
        return Encoded(
            input_ids=np.array(e.ids, dtype=np.int64),
            token_type_ids=np.array(e.type_ids, dtype=np.int64)
            if self.uses_token_type_ids
            else None,
            tokens=e.tokens if tokens else None,
            offsets=e.offsets if offsets else None,
            special_tokens_mask=e.special_tokens_mask if special else None,
        )

    def tokens_to_string(self, tokens: list[str]) -> str:
        """Tokens joined back into text, as transformers' convert_tokens_to_string."""
        return self.hf.convert_tokens_to_string(tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Ids back into text, as transformers' decode (with its clean-up of spaces)."""
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def target_id(self, target: str) -> int | None:
        """The token a fill-mask target stands for, as the pipeline picks it: the target's own
        id if it is in the vocabulary, else the one token left of it truncated to max_length 1
        (None if it has none)."""
        found = self.hf.backend_tokenizer.token_to_id(target)
        if found is not None:
            return found
        # This thread's backend, not transformers' tokenizer: that one's truncation is state
        # shared with the threads that decode.
        ids = self._backend(False, 0).encode(target, add_special_tokens=False).ids
        if not ids:
            return None
        return ids[0] if self._truncation_side == "right" else ids[-1]

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


def _lowercasing(backend: Tokenizer, lowercase: bool) -> Tokenizer:
    """`backend`, or with `lowercase` a copy with a Lowercase normalizer in front of its own
    unless it has one: sentence-transformers' do_lower_case. Lowercase maps each character on
    its own (no final-sigma rule, unlike str.lower), and after special tokens are matched."""
    current = backend.normalizer
    steps = list(current) if isinstance(current, normalizers.Sequence) else [current]
    if not lowercase or any(isinstance(step, normalizers.Lowercase) for step in steps):
        return backend
    copy = Tokenizer.from_str(backend.to_str())
    copy.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), *(step for step in steps if step is not None)]
    )
    return copy


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
