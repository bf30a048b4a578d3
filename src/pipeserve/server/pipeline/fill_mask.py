"""Masked-LM logits -> the candidates for each mask token, as transformers' FillMaskPipeline
(pipelines/fill_mask.py: postprocess, get_target_ids) computes them. Pure numpy; knows
nothing of gRPC or workers.

Only the mask tokens' rows of the logits are wanted, a few of [tokens, vocab]: the worker
picks them out right after the forward (`gather_masks`, asked for as a `schema.MaskRows`
output), so they alone cross shared memory, as pooled embeddings do.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeserve.server.errors import InvalidInput, quoted

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
                f"targets[{index}] {quoted(target)} is not in the vocabulary and tokenizes to "
                "nothing"
            )
        ids.append(found)
    return np.array(list(dict.fromkeys(ids)), dtype=np.int64)


def mask_positions(input_ids: np.ndarray, mask_token_id: int) -> np.ndarray:
    return np.flatnonzero(input_ids == mask_token_id)


def gather_masks(
    logits: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray, mask_token_id: int
) -> np.ndarray:
    """A batch's [batch, tokens, vocab] logits -> [batch, masks, vocab]: each row's mask tokens'
    logits in the order of their positions, then zero rows up to the batch's most masks. The
    server finds the positions in its own ids, so the rows alone map back to them."""
    found = (input_ids == mask_token_id) & attention_mask.astype(bool)
    counts = found.sum(axis=1)
    gathered = np.zeros((len(logits), counts.max(initial=0), logits.shape[-1]), logits.dtype)
    rows, positions = np.nonzero(found)  # row-major: each row's masks in order
    firsts = np.repeat(np.cumsum(counts) - counts, counts)
    gathered[rows, np.arange(len(rows)) - firsts] = logits[rows, positions]
    return gathered


def fill(
    input_ids: np.ndarray,
    mask_logits: np.ndarray,
    top_k: int,
    targets: np.ndarray | None,
    tokenizer: Decoder,
) -> list[MaskFill]:
    """Each mask's best `top_k` candidates from one text's ids and its masks' logits
    [masks (and any zero rows after them), vocab], as `gather_masks` gives them."""
    assert tokenizer.mask_token_id is not None
    if targets is not None:
        top_k = min(top_k, len(targets))
    top_k = min(top_k, mask_logits.shape[-1])
    positions = mask_positions(input_ids, tokenizer.mask_token_id)
    masked = mask_logits[: len(positions)].astype(np.float32, copy=False)
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
