"""Token-level logits -> entities, ported from transformers' TokenClassificationPipeline
(pipelines/token_classification.py: gather_pre_entities, aggregate, aggregate_word(s),
group_entities, aggregate_overlapping_entities) so that results equal the pipeline's. Kept in
its shape (dicts between the steps) to stay checkable against it line by line. Pure numpy;
knows nothing of gRPC or workers.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from pipeserve.server.pipeline.tokenize import Encoded


class Strategy(StrEnum):
    """The pipeline's aggregation_strategy."""

    NONE = "none"
    SIMPLE = "simple"
    FIRST = "first"
    AVERAGE = "average"
    MAX = "max"


# The pipeline's default ignore_labels.
DEFAULT_IGNORE_LABELS = ("O",)


class Subwords(Protocol):
    """What the aggregation needs of the tokenizer (TextTokenizer has it)."""

    unk_token_id: int | None
    word_aware: bool

    def tokens_to_string(self, tokens: list[str]) -> str: ...


@dataclass(frozen=True)
class Entity:
    label: str
    score: float
    word: str
    start: int
    end: int
    # Token index in its window (strategy none only).
    index: int | None = None


def entities(
    text: str,
    windows: Sequence[tuple[Encoded, np.ndarray]],
    id2label: dict[int, str],
    strategy: Strategy,
    ignore_labels: Sequence[str],
    tokenizer: Subwords,
) -> list[Entity]:
    """The entities of `text` from its windows (each its encoding, with tokens, offsets and
    special tokens mask, and the model's logits [tokens, labels]), as the pipeline's
    postprocess gives them."""
    found: list[dict[str, Any]] = []
    for encoded, logits in windows:
        logits = logits.astype(np.float32, copy=False)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        pre = _gather_pre_entities(text, encoded, scores, strategy, tokenizer)
        grouped = _aggregate(pre, strategy, id2label, tokenizer)
        found.extend(
            e
            for e in grouped
            if e.get("entity") not in ignore_labels and e.get("entity_group") not in ignore_labels
        )
    if len(windows) > 1:
        found = _aggregate_overlapping_entities(found)
    return [
        Entity(
            label=e.get("entity_group", e.get("entity")),
            score=float(e["score"]),
            word=e["word"],
            start=int(e["start"]),
            end=int(e["end"]),
            index=e.get("index") if strategy is Strategy.NONE else None,
        )
        for e in found
    ]


def _gather_pre_entities(
    text: str,
    encoded: Encoded,
    scores: np.ndarray,
    strategy: Strategy,
    tokenizer: Subwords,
) -> list[dict[str, Any]]:
    assert encoded.tokens is not None and encoded.offsets is not None
    assert encoded.special_tokens_mask is not None
    pre_entities = []
    for idx, token_scores in enumerate(scores):
        if encoded.special_tokens_mask[idx]:
            continue
        word = encoded.tokens[idx]
        start_ind, end_ind = encoded.offsets[idx]
        word_ref = text[start_ind:end_ind]
        if tokenizer.word_aware:
            # A word-aware (continuing-subword-prefix) tokenizer: the right way to fuse tokens.
            is_subword = len(word) != len(word_ref)
        else:
            # The pipeline's fallback heuristic for tokenizers that know no words.
            is_subword = start_ind > 0 and " " not in text[start_ind - 1 : start_ind + 1]
        if int(encoded.input_ids[idx]) == tokenizer.unk_token_id:
            word = word_ref
            is_subword = False
        pre_entities.append(
            {
                "word": word,
                "scores": token_scores,
                "start": start_ind,
                "end": end_ind,
                "index": idx,
                "is_subword": is_subword,
            }
        )
    return pre_entities


def _aggregate(
    pre_entities: list[dict[str, Any]],
    strategy: Strategy,
    id2label: dict[int, str],
    tokenizer: Subwords,
) -> list[dict[str, Any]]:
    if strategy in (Strategy.NONE, Strategy.SIMPLE):
        entities = []
        for pre_entity in pre_entities:
            entity_idx = int(pre_entity["scores"].argmax())
            entities.append(
                {
                    "entity": id2label[entity_idx],
                    "score": pre_entity["scores"][entity_idx],
                    "index": pre_entity["index"],
                    "word": pre_entity["word"],
                    "start": pre_entity["start"],
                    "end": pre_entity["end"],
                }
            )
    else:
        entities = _aggregate_words(pre_entities, strategy, id2label, tokenizer)
    if strategy is Strategy.NONE:
        return entities
    return _group_entities(entities, tokenizer)


def _aggregate_word(
    entities: list[dict[str, Any]],
    strategy: Strategy,
    id2label: dict[int, str],
    tokenizer: Subwords,
) -> dict[str, Any]:
    word = tokenizer.tokens_to_string([entity["word"] for entity in entities])
    if strategy is Strategy.FIRST:
        scores = entities[0]["scores"]
    elif strategy is Strategy.MAX:
        scores = max(entities, key=lambda entity: entity["scores"].max())["scores"]
    else:  # AVERAGE
        scores = np.nanmean(np.stack([entity["scores"] for entity in entities]), axis=0)
    idx = int(scores.argmax())
    return {
        "entity": id2label[idx],
        "score": scores[idx],
        "word": word,
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _aggregate_words(
    entities: list[dict[str, Any]],
    strategy: Strategy,
    id2label: dict[int, str],
    tokenizer: Subwords,
) -> list[dict[str, Any]]:
    """Makes the tokens of a word agree on one label (micro|soft| -> microsoft|)."""
    word_entities = []
    word_group: list[dict[str, Any]] | None = None
    for entity in entities:
        if word_group is None:
            word_group = [entity]
        elif entity["is_subword"]:
            word_group.append(entity)
        else:
            word_entities.append(_aggregate_word(word_group, strategy, id2label, tokenizer))
            word_group = [entity]
    if word_group is not None:
        word_entities.append(_aggregate_word(word_group, strategy, id2label, tokenizer))
    return word_entities


def _group_sub_entities(entities: list[dict[str, Any]], tokenizer: Subwords) -> dict[str, Any]:
    entity = entities[0]["entity"].split("-", 1)[-1]
    scores = np.nanmean([entity["score"] for entity in entities])
    return {
        "entity_group": entity,
        "score": np.mean(scores),
        "word": tokenizer.tokens_to_string([entity["word"] for entity in entities]),
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def _get_tag(entity_name: str) -> tuple[str, str]:
    if entity_name.startswith("B-"):
        return "B", entity_name[2:]
    if entity_name.startswith("I-"):
        return "I", entity_name[2:]
    # Not in B-/I- format: a continuation.
    return "I", entity_name


def _group_entities(entities: list[dict[str, Any]], tokenizer: Subwords) -> list[dict[str, Any]]:
    """Groups adjacent tokens of the same entity; two B- tokens start two entities."""
    entity_groups = []
    entity_group_disagg: list[dict[str, Any]] = []
    for entity in entities:
        if not entity_group_disagg:
            entity_group_disagg.append(entity)
            continue
        bi, tag = _get_tag(entity["entity"])
        _, last_tag = _get_tag(entity_group_disagg[-1]["entity"])
        if tag == last_tag and bi != "B":
            entity_group_disagg.append(entity)
        else:
            entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
            entity_group_disagg = [entity]
    if entity_group_disagg:
        entity_groups.append(_group_sub_entities(entity_group_disagg, tokenizer))
    return entity_groups


def _aggregate_overlapping_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of entities that overlap (windows share tokens), keeps the longer, then the better."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda x: x["start"])
    aggregated = []
    previous = entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            current_length = entity["end"] - entity["start"]
            previous_length = previous["end"] - previous["start"]
            if current_length > previous_length or (
                current_length == previous_length and entity["score"] > previous["score"]
            ):
                previous = entity
        else:
            aggregated.append(previous)
            previous = entity
    aggregated.append(previous)
    return aggregated
