"""Request inputs in plain Python terms, independent of the wire format."""

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


@dataclass(frozen=True)
class TokenIds:
    """Already tokenized input: ids without padding, optional segment ids."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None = None


# A text, a (text, text_pair) pair, or token ids.
TextInput = str | tuple[str, str]
ModelInput = str | tuple[str, str] | TokenIds


class Padding(StrEnum):
    LONGEST = "longest"
    MAX_LENGTH = "max_length"
    NONE = "do_not_pad"


@dataclass(frozen=True)
class TextOptions:
    """How texts become ids: transformers' padding / truncation / max_length."""

    padding: Padding = Padding.LONGEST
    truncation: bool = True
    max_length: int | None = None
    # Truncate only the first text of a pair, as the zero-shot pipeline keeps its hypothesis.
    only_first: bool = False


@dataclass(frozen=True)
class EncodeFlags:
    """Which optional fields a Tokenize caller wants back."""

    attention_mask: bool = True
    token_type_ids: bool | None = None
    tokens: bool = False
    offsets: bool = False
