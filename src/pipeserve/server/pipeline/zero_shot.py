"""Zero-shot classification as transformers' zero-shot-classification pipeline computes it:
each (text, hypothesis) pair through an NLI model, the entailment logits turned into label
scores.

Pure: numpy only, no gRPC.
"""

import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from pipeserve.server.errors import InvalidInput, TooLarge, quoted
from pipeserve.server.pipeline.classify import LabelScore

DEFAULT_TEMPLATE = "This example is {}."
# Widest field a hypothesis_template may pad its label to.
MAX_FIELD_WIDTH = 1000


def entailment_id(label2id: Mapping[str, int]) -> int | None:
    """The entailment class, found as the pipeline finds it: the first label starting with
    "entail" (any case). None when there is none (the pipeline would then guess the last)."""
    for label, index in label2id.items():
        if label.lower().startswith("entail"):
            return int(index)
    return None


def _parts(template: str) -> tuple[int, list[tuple[int, bool]]]:
    """The template's literal characters, and per field its widest width and whether it
    converts the label (!r, !a), from its parts alone. Refuses a field width that would build
    a huge hypothesis ("{:>999999999}" is a GB) before any length limit could see it."""
    literal, fields = 0, []
    for text, name, spec, conversion in string.Formatter().parse(template):
        literal += len(text)
        if name is None:
            continue
        widths = [int(digits) for digits in re.findall(r"\d+", spec or "")]
        if widths and max(widths) > MAX_FIELD_WIDTH:
            raise InvalidInput(
                f"hypothesis_template {quoted(template)} asks for a field {max(widths)} "
                f"characters wide; at most {MAX_FIELD_WIDTH}"
            )
        fields.append((max(widths, default=0), conversion in ("r", "a")))
    return literal, fields


def check_template(template: str, labels: Sequence[str], max_chars: int, max_text: int) -> None:
    """Refuses a template over `max_chars` characters, and one whose hypotheses could pass
    `max_text` characters, from lengths alone, before any is made. (A template that cannot
    be parsed is left to `hypotheses`, which says why.)"""
    if len(template) > max_chars:
        raise TooLarge(
            f"hypothesis_template has {len(template)} characters, limit "
            f"max_template_chars={max_chars}"
        )
    try:
        literal, fields = _parts(template)
    except ValueError:
        return
    longest = max(map(len, labels), default=0)
    # repr() of a label writes a character as up to 10 ("\U0001f600"), and adds quotes.
    bound = literal + sum(
        max(width, 10 * longest + 2 if converts else longest) for width, converts in fields
    )
    if bound > max_text:
        raise TooLarge(
            f"hypothesis_template makes hypotheses of up to {bound} characters with the "
            f"longest candidate label ({longest} characters), limit max_text_chars={max_text}"
        )


def hypotheses(labels: Sequence[str], template: str) -> list[str]:
    """One hypothesis per label; refuses what the pipeline refuses, and empty or repeated
    labels, whose scores could not be told apart."""
    if not labels:
        raise InvalidInput("candidate_labels is empty: give at least one label")
    first: dict[str, int] = {}
    for index, label in enumerate(labels):
        if not label.strip():
            raise InvalidInput(f"candidate_labels[{index}] is empty")
        if label in first:
            raise InvalidInput(
                f"candidate_labels[{index}] {quoted(label)} is given twice (first at "
                f"{first[label]})"
            )
        first[label] = index
    try:
        _parts(template)
        formatted = [template.format(label) for label in labels]
    # What str.format raises for a template it cannot fill with one string: a missing
    # positional or named field, a bad conversion or spec, an attribute or index of the label.
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        raise InvalidInput(
            f"hypothesis_template {quoted(template)} cannot be formatted: {error!r}; put {{}} "
            "where the label goes"
        ) from error
    if formatted[0] == template:
        raise InvalidInput(
            f"hypothesis_template {quoted(template)} has no {{}} for the label; e.g. "
            f"{DEFAULT_TEMPLATE!r}"
        )
    return formatted


def check_hypothesis_room(
    labels: Sequence[str], lengths: Sequence[int], pair_special_tokens: int, max_length: int
) -> None:
    """Refuses a label whose hypothesis (`lengths`: tokens of each, no special tokens) leaves
    no token of any text within `max_length`: the pipeline truncates the text only, and the
    tokenizer fails on such a pair ("Sequence to truncate too short")."""
    for index, (label, length) in enumerate(zip(labels, lengths, strict=True)):
        if length + pair_special_tokens >= max_length:
            raise InvalidInput(
                f"candidate_labels[{index}] {quoted(label)} makes a hypothesis of {length} tokens, "
                f"which with the {pair_special_tokens} special tokens of a pair leaves no room "
                f"for the text within max_length {max_length}: shorten the label or the "
                "hypothesis_template, or raise max_length"
            )


def label_scores(
    logits: np.ndarray, entailment: int, multi_label: bool, labels: Sequence[str]
) -> list[list[LabelScore]]:
    """[texts, labels, classes] logits -> per text, every label best first, as the pipeline's
    postprocess (the same formulas in float32, the same ordering of ties)."""
    logits = logits.astype(np.float32, copy=False)
    if multi_label or len(labels) == 1:
        # Entailment against the pipeline's "contradiction": class 0, or the last one when
        # entailment is class 0.
        contradiction = -1 if entailment == 0 else 0
        pair = np.exp(logits[..., [contradiction, entailment]])
        scores = (pair / pair.sum(-1, keepdims=True))[..., 1]
    else:
        entail = np.exp(logits[..., entailment])
        scores = entail / entail.sum(-1, keepdims=True)
    results = []
    for row in scores:
        order = list(reversed(row.argsort()))
        results.append([LabelScore(labels[i], float(row[i]), int(i)) for i in order])
    return results
