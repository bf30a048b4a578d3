"""Classify against transformers' text-classification pipeline, other heads, ModelInfo and
deadlines, on real servers with tiny real checkpoints."""

import os
import re
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from pipeserve.client import LabelScore, PipeserveError
from tests.helpers import SEED_SENTENCES
from tests.servers import ModelClient

SCORE_ATOL = 1e-5
PAIRS = [
    ("The movie was long.", "I enjoyed every minute of it."),
    ("Is the food good?", "Not really."),
]


@pytest.fixture(scope="module")
def classifier(tiny_distilbert):
    """The served checkpoint in-process: (tokenizer, model, config)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    return tokenizer, model, model.config


def _logits(classifier, items: list) -> np.ndarray:
    """In-process logits, one unpadded item at a time."""
    import torch

    tokenizer, model, _ = classifier
    rows = []
    with torch.inference_mode():
        for item in items:
            args = (item,) if isinstance(item, str) else item
            rows.append(model(**tokenizer(*args, return_tensors="pt")).logits[0].numpy())
    return np.stack(rows)


def _expected(scores: np.ndarray, id2label: dict[int, str]) -> list[list[tuple[str, int]]]:
    """(label, index) per item, best first."""
    return [[(id2label[int(i)], int(i)) for i in np.argsort(-row, kind="stable")] for row in scores]


def _names(results: list[list[LabelScore]]) -> list[list[tuple[str, int]]]:
    return [[(s.label, s.index) for s in row] for row in results]


def _scores(results: list[list[LabelScore]]) -> np.ndarray:
    return np.array([[s.score for s in row] for row in results])


def test_classify_equals_the_text_classification_pipeline(client, tiny_distilbert):
    from transformers import pipeline

    reference = pipeline("text-classification", model=str(tiny_distilbert), top_k=None)(
        SEED_SENTENCES
    )

    results = client.classify(SEED_SENTENCES, top_k=None)

    assert [[s.label for s in row] for row in results] == [
        [d["label"] for d in row] for row in reference
    ]
    np.testing.assert_allclose(
        _scores(results),
        [[d["score"] for d in row] for row in reference],
        rtol=0,
        atol=SCORE_ATOL,
    )


def test_top_k_defaults_to_the_best_label(client, classifier):
    results = client.classify(SEED_SENTENCES)

    logits = _logits(classifier, SEED_SENTENCES)
    best = logits.argmax(axis=-1)
    config = classifier[2]
    assert [len(row) for row in results] == [1, 1]
    assert _names(results) == [[(config.id2label[int(i)], int(i))] for i in best]
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(
        _scores(results)[:, 0], probabilities.max(axis=-1), rtol=0, atol=SCORE_ATOL
    )


@pytest.mark.parametrize("top_k", [None, 2, 50])
def test_top_k_covering_every_label_returns_them_all_sorted(client, classifier, top_k):
    results = client.classify(SEED_SENTENCES, top_k=top_k)

    config = classifier[2]
    for row in results:
        assert sorted(s.label for s in row) == sorted(config.id2label.values())
        scores = [s.score for s in row]
        assert scores == sorted(scores, reverse=True)
        assert all(config.id2label[s.index] == s.label for s in row)
    assert _names(results) == _expected(_logits(classifier, SEED_SENTENCES), config.id2label)


@pytest.mark.parametrize("function", ["sigmoid", "none", "softmax"])
def test_function_to_apply(client, classifier, function):
    results = client.classify(SEED_SENTENCES, function_to_apply=function, top_k=None)

    logits = _logits(classifier, SEED_SENTENCES).astype(np.float64)
    if function == "sigmoid":
        expected = 1 / (1 + np.exp(-logits))
    elif function == "softmax":
        expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    else:
        expected = logits
    assert _names(results) == _expected(expected, classifier[2].id2label)
    by_index = np.array([[s.score for s in sorted(row, key=lambda s: s.index)] for row in results])
    np.testing.assert_allclose(by_index, expected, rtol=0, atol=SCORE_ATOL)


def test_text_pairs_equal_the_pipeline(client, classifier, tiny_distilbert):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(tiny_distilbert), top_k=None)
    reference = classify([{"text": a, "text_pair": b} for a, b in PAIRS])

    results = client.classify(PAIRS, top_k=None)

    assert [[s.label for s in row] for row in results] == [
        [d["label"] for d in row] for row in reference
    ]
    np.testing.assert_allclose(
        _scores(results), [[d["score"] for d in row] for row in reference], rtol=0, atol=SCORE_ATOL
    )
    # A pair is not its first text alone.
    firsts = client.classify([a for a, _ in PAIRS], top_k=None)
    assert not np.allclose(_scores(results), _scores(firsts), rtol=0, atol=1e-6)


# --- Other heads ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner_client(every_task) -> Iterator[ModelClient]:
    with ModelClient(every_task.address, "ner", timeout=60) as c:
        yield c


def test_token_classifier_refuses_classify(ner_client):
    with pytest.raises(PipeserveError) as caught:
        ner_client.classify(SEED_SENTENCES)

    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Forward" in caught.value.details


def test_token_classifier_refuses_classify_stream_per_request(ner_client):
    results = list(ner_client.classify_stream([("a", SEED_SENTENCES), ("b", ["one more"])]))

    assert sorted(r.id for r in results) == ["a", "b"]
    for result in results:
        assert result.results is None
        assert result.error is not None
        assert result.error.code == grpc.StatusCode.FAILED_PRECONDITION


def test_token_classifier_forward_returns_per_token_logits(ner_client, tiny_bert_ner):
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    out = ner_client.forward(SEED_SENTENCES)

    assert list(out) == ["logits"]
    assert out.logits.shape == (2, 16, 5)  # the five labels of tiny_bert_ner
    assert out.sequence_lengths.tolist() == [16, 8]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_ner)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert_ner).eval()
    for row, sentence in enumerate(SEED_SENTENCES):
        with torch.inference_mode():
            expected = model(**tokenizer(sentence, return_tensors="pt")).logits[0].numpy()
        length = len(expected)
        np.testing.assert_allclose(out.logits[row, :length], expected, rtol=0, atol=1e-5)
        assert not out.logits[row, length:].any()


def test_bare_encoder_forward_defaults_to_last_hidden_state(bert_client, tiny_bert):
    import torch
    from transformers import AutoModel, AutoTokenizer

    default = bert_client.forward(SEED_SENTENCES)
    both = bert_client.forward(SEED_SENTENCES, outputs=["pooler_output", "last_hidden_state"])

    assert list(default) == ["last_hidden_state"]
    assert default.last_hidden_state.shape == (2, 16, 32)
    assert list(both) == ["pooler_output", "last_hidden_state"]
    assert both.pooler_output.shape == (2, 32)
    np.testing.assert_array_equal(both[1], both.last_hidden_state)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    for row, sentence in enumerate(SEED_SENTENCES):
        with torch.inference_mode():
            expected = model(**tokenizer(sentence, return_tensors="pt"))
        hidden = expected.last_hidden_state[0].numpy()
        length = len(hidden)
        for out in (default, both):
            np.testing.assert_allclose(out.last_hidden_state[row, :length], hidden, atol=1e-5)
            assert not out.last_hidden_state[row, length:].any()
        np.testing.assert_allclose(
            both.pooler_output[row], expected.pooler_output[0].numpy(), rtol=0, atol=1e-5
        )


def test_bare_encoder_refuses_classify(bert_client):
    with pytest.raises(PipeserveError) as caught:
        bert_client.classify(SEED_SENTENCES)

    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


# --- ModelInfo --------------------------------------------------------------------------------


def test_model_info_describes_the_classifier(client, classifier, tiny_distilbert):
    tokenizer, _, config = classifier

    info = client.model_info()

    assert info.model == str(tiny_distilbert)
    assert info.task == "text-classification"
    assert info.architecture == "DistilBertForSequenceClassification"
    assert info.labels == [config.id2label[i] for i in range(config.num_labels)]
    assert info.max_length == min(tokenizer.model_max_length, config.max_position_embeddings)
    assert info.vocab_size == config.vocab_size == len(tokenizer)
    assert info.hidden_size == config.dim
    assert "logits" in info.outputs
    assert "last_hidden_state" in info.outputs
    assert info.dtype == "float32"
    assert info.max_items_per_request > 0
    assert sorted(w.id for w in info.workers) == [0, 1]
    for worker in info.workers:
        assert re.fullmatch(r"cpu:\d+([-,]\d+)*", worker.device), worker
        assert worker.ready, worker
        assert worker.pid > 0 and worker.pid != os.getpid(), worker
        os.kill(worker.pid, 0)  # a live process
    assert len({w.pid for w in info.workers}) == 2
    if len(os.sched_getaffinity(0)) >= 2:
        assert len({w.device for w in info.workers}) == 2


def test_model_info_describes_a_bare_encoder(bert_client, tiny_bert):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_bert)

    info = bert_client.model_info()

    assert info.task == "feature-extraction"
    assert info.architecture == "BertModel"
    assert info.labels == []
    assert info.hidden_size == config.hidden_size
    assert info.vocab_size == config.vocab_size
    assert {"last_hidden_state", "pooler_output"} <= set(info.outputs)
    assert len(info.workers) == 1
