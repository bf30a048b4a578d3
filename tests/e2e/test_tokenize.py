"""Tokenize against the model's own tokenizer run in-process, and Tokenize -> Forward by ids."""

import grpc
import numpy as np
import pytest

from pipeserve.client import Encoding, PipeserveError
from tests.helpers import SEED_SENTENCES

# The expected ids for SEED_SENTENCES, verbatim (bert-base-uncased vocabulary).
# fmt: off
SEED_IDS = [
    [101, 1045, 1005, 2310, 2042, 3403, 2005, 1037, 17662, 12172, 2607, 2026, 2878, 2166, 1012,
     102],
    [101, 1045, 5223, 2023, 2061, 2172, 999, 102, 0, 0, 0, 0, 0, 0, 0, 0],
]
# fmt: on
PAIRS = [
    ("Where is the cat?", "The cat sleeps on the warm windowsill all afternoon."),
    ("Is it raining?", "No."),
]
# Over 512 tokens (the model maximum) once tokenized.
TOO_LONG = "word " * 600


@pytest.fixture(scope="module")
def tokenizer(tiny_distilbert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_distilbert)


def _column(encodings: list[Encoding], name: str) -> list[list]:
    return [getattr(e, name) for e in encodings]


def test_seed_sentences_give_the_expected_ids_and_mask(client, tokenizer):
    encodings = client.tokenize(SEED_SENTENCES)

    assert _column(encodings, "input_ids") == SEED_IDS
    reference = tokenizer(SEED_SENTENCES, padding=True, truncation=True)
    assert _column(encodings, "input_ids") == reference["input_ids"]
    assert _column(encodings, "attention_mask") == reference["attention_mask"]


def test_padding_to_max_length(client, tokenizer):
    encodings = client.tokenize(SEED_SENTENCES, padding="max_length", max_length=24)

    reference = tokenizer(SEED_SENTENCES, padding="max_length", max_length=24, truncation=True)
    assert [len(ids) for ids in _column(encodings, "input_ids")] == [24, 24]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert _column(encodings, name) == reference[name], name


def test_do_not_pad_keeps_each_length(client, tokenizer):
    encodings = client.tokenize(SEED_SENTENCES, padding="do_not_pad")

    reference = tokenizer(SEED_SENTENCES, padding=False, truncation=True)
    assert [len(ids) for ids in _column(encodings, "input_ids")] == [16, 8]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert _column(encodings, name) == reference[name], name


def test_truncation_to_a_small_max_length(client, tokenizer):
    encodings = client.tokenize(SEED_SENTENCES, max_length=6)

    reference = tokenizer(SEED_SENTENCES, padding=True, truncation=True, max_length=6)
    assert _column(encodings, "input_ids") == reference["input_ids"]
    assert _column(encodings, "attention_mask") == reference["attention_mask"]
    assert all(ids[-1] == tokenizer.sep_token_id for ids in reference["input_ids"])


def test_text_pairs_get_segment_ids(client, tokenizer):
    encodings = client.tokenize(PAIRS)

    texts, seconds = zip(*PAIRS, strict=True)
    reference = tokenizer(list(texts), list(seconds), padding=True, truncation=True)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert _column(encodings, name) == reference[name], name
    assert any(1 in types for types in _column(encodings, "token_type_ids"))


def test_text_pairs_truncate_longest_first(client, tokenizer):
    encodings = client.tokenize(PAIRS, max_length=10)

    texts, seconds = zip(*PAIRS, strict=True)
    reference = tokenizer(list(texts), list(seconds), padding=True, truncation=True, max_length=10)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert _column(encodings, name) == reference[name], name


def test_texts_and_pairs_in_one_request_pad_together(client, tokenizer):
    items = [SEED_SENTENCES[1], PAIRS[0], SEED_SENTENCES[0], {"text": "Hi", "text_pair": "there"}]
    encodings = client.tokenize(items)

    alone = [
        tokenizer(item) if isinstance(item, str) else tokenizer(*_pair(item)) for item in items
    ]
    longest = max(len(a["input_ids"]) for a in alone)
    for encoding, expected in zip(encodings, alone, strict=True):
        pad = longest - len(expected["input_ids"])
        assert encoding.input_ids == expected["input_ids"] + [tokenizer.pad_token_id] * pad
        assert encoding.attention_mask == expected["attention_mask"] + [0] * pad
        assert encoding.token_type_ids == expected["token_type_ids"] + [0] * pad


def _pair(item) -> tuple[str, str]:
    return (item["text"], item["text_pair"]) if isinstance(item, dict) else item


def test_return_tokens(client, tokenizer):
    encodings = client.tokenize(SEED_SENTENCES, return_tokens=True)

    reference = tokenizer(SEED_SENTENCES, padding=True, truncation=True)
    assert [e.tokens for e in encodings] == [reference.tokens(i) for i in range(2)]
    assert encodings[1].tokens[-1] == tokenizer.pad_token


def test_return_offsets_equal_offset_mapping(client, tokenizer):
    items = [*SEED_SENTENCES, PAIRS[0]]
    encodings = client.tokenize(items, return_offsets=True)

    for encoding, item in zip(encodings, items, strict=True):
        args = (item,) if isinstance(item, str) else item
        reference = tokenizer(*args, return_offsets_mapping=True)["offset_mapping"]
        pad = len(encoding.input_ids) - len(reference)
        assert encoding.offsets == [tuple(span) for span in reference] + [(0, 0)] * pad
    # Padded alike, the whole request matches transformers' own batch.
    singles = tokenizer(SEED_SENTENCES, padding=True, return_offsets_mapping=True)
    singles_only = client.tokenize(SEED_SENTENCES, return_offsets=True)
    assert [e.offsets for e in singles_only] == [
        [tuple(span) for span in row] for row in singles["offset_mapping"]
    ]


def test_optional_fields_can_be_left_out(client, tokenizer):
    encodings = client.tokenize(
        SEED_SENTENCES, return_attention_mask=False, return_token_type_ids=False
    )

    reference = tokenizer(SEED_SENTENCES, padding=True, truncation=True)
    assert _column(encodings, "input_ids") == reference["input_ids"]
    assert _column(encodings, "attention_mask") == [[], []]
    assert _column(encodings, "token_type_ids") == [[], []]
    assert _column(encodings, "tokens") == [[], []]
    assert _column(encodings, "offsets") == [[], []]


@pytest.mark.parametrize("method", ["tokenize", "forward", "classify"])
def test_item_over_the_model_maximum_without_truncation_is_refused(client, method):
    with pytest.raises(PipeserveError) as caught:
        getattr(client, method)(["short", TOO_LONG], truncation=False)

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[1]" in caught.value.details
    assert "512" in caught.value.details


def test_forward_by_ids_equals_forward_by_text(client):
    outputs = ["logits", "last_hidden_state"]
    encodings = client.tokenize(SEED_SENTENCES)
    assert encodings[1].attention_mask.count(0) > 0  # the padding must be dropped on the way back

    by_ids = client.forward(encodings, outputs=outputs)
    by_text = client.forward(SEED_SENTENCES, outputs=outputs)

    assert by_ids.sequence_lengths.tolist() == by_text.sequence_lengths.tolist() == [16, 8]
    for name in outputs:
        assert by_ids[name].shape == by_text[name].shape
        np.testing.assert_allclose(by_ids[name], by_text[name], rtol=0, atol=1e-6, err_msg=name)


def test_classify_by_ids_equals_classify_by_text(client):
    encodings = client.tokenize(SEED_SENTENCES)

    by_ids = client.classify(encodings, top_k=None)
    by_text = client.classify(SEED_SENTENCES, top_k=None)

    for ids_row, text_row in zip(by_ids, by_text, strict=True):
        assert [s.label for s in ids_row] == [s.label for s in text_row]
        np.testing.assert_allclose(
            [s.score for s in ids_row], [s.score for s in text_row], rtol=0, atol=1e-6
        )


def test_pair_encodings_forward_with_their_segment_ids(bert_client):
    outputs = ["last_hidden_state", "pooler_output"]
    encodings = bert_client.tokenize(PAIRS)

    by_ids = bert_client.forward(encodings, outputs=outputs)
    by_text = bert_client.forward(PAIRS, outputs=outputs)
    # The same ids with every segment id 0: what the model sees if the types were dropped.
    ids_only = [
        [i for i, m in zip(e.input_ids, e.attention_mask, strict=True) if m] for e in encodings
    ]
    without_types = bert_client.forward(ids_only, outputs=outputs)

    assert by_ids.sequence_lengths.tolist() == by_text.sequence_lengths.tolist()
    for name in outputs:
        np.testing.assert_allclose(by_ids[name], by_text[name], rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(without_types.pooler_output, by_text.pooler_output, atol=1e-4)
