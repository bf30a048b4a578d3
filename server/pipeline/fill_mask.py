"""Masked-LM logits -> the candidates for each mask token, as transformers' FillMaskPipeline
(pipelines/fill_mask.py: postprocess, get_target_ids) computes them. Pure numpy; knows
nothing of gRPC or workers."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeserve.server.errors import InvalidInput

# The pipeline's default top_k.
DEFAULT_TOP_K = 5


class Decoder(Protocol):
    """What filling in needs of the tokenizer (TextTokenizer has it)."""

    mask_token_id: int | None
    pad_token_id: int

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def target_id(self, target: str) -> int | None: ...


@dataclass(frozen=True)
class Candidate:
    score: float
    token: int
    token_str: str
    sequence: str


@dataclass(frozen=True)
class MaskFill:
    # Index of the mask token in the text's tokens.
    position: int
    candidates: list[Candidate]


def target_ids(targets: Sequence[str], tokenizer: Decoder) -> np.ndarray | None:
    """The token ids the candidates are restricted to (None: the whole vocabulary), each once;
    refuses a target the tokenizer makes no token of (the pipeline ignores it, with a
    warning no caller of the server would see)."""
    if not targets:
        return None
    ids = []
    for index, target in enumerate(targets):
        found = tokenizer.target_id(target)
        if found is None:
            raise InvalidInput(
                f"targets[{index}] {target!r} is not in the vocabulary and tokenizes to nothing"
            )
        ids.append(found)
    return np.array(list(dict.fromkeys(ids)), dtype=np.int64)


def mask_positions(input_ids: np.ndarray, mask_token_id: int) -> np.ndarray:
    return np.flatnonzero(input_ids == mask_token_id)


def fill(
    input_ids: np.ndarray,
    logits: np.ndarray,
    top_k: int,
    targets: np.ndarray | None,
    tokenizer: Decoder,
) -> list[MaskFill]:
    """Each mask's best `top_k` candidates from one text's ids and logits [tokens, vocab]."""
    assert tokenizer.mask_token_id is not None
    if targets is not None:
        top_k = min(top_k, len(targets))
    top_k = min(top_k, logits.shape[-1])
    positions = mask_positions(input_ids, tokenizer.mask_token_id)
    masked = logits[positions].astype(np.float32, copy=False)
    shifted = np.exp(masked - masked.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    if targets is not None:
        probs = probs[:, targets]
    single_mask = len(positions) == 1
    fills = []
    for position, row in zip(positions.tolist(), probs, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        candidates = []
        for p in best.tolist():
            token = int(targets[p]) if targets is not None else p
            tokens = input_ids.copy()
            tokens[position] = token
            tokens = tokens[tokens != tokenizer.pad_token_id]
            candidates.append(
                Candidate(
                    score=float(row[p]),
                    token=token,
                    token_str=tokenizer.decode([token]),
                    sequence=tokenizer.decode(tokens.tolist(), skip_special_tokens=single_mask),
                )
            )
        fills.append(MaskFill(position, candidates))
    return fills
