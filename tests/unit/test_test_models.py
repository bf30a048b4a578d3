"""The test classifier itself: its outputs must depend strongly on the input, or the fidelity
tests (served results equal in-process results within 1e-5) would pass for a server that
swapped items, mixed up stream ids or dropped the softmax. If a change to tests/checkpoints.py
or the tiny_distilbert fixture makes the tiny model bland again, these tests say so."""

import itertools

import numpy as np
import pytest

from tests.helpers import SEED_SENTENCES, sst2_sentences

# The tightest tolerance the fidelity tests compare logits and scores with.
TOLERANCE = 1e-5
FIDELITY_SENTENCES = 300  # how many dev sentences tests/e2e/test_fidelity.py serves


@pytest.fixture(scope="module")
def classify(tiny_distilbert):
    """texts (or pairs) -> in-process logits, one unpadded item at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()

    def logits(items: list) -> np.ndarray:
        with torch.inference_mode():
            return np.stack(
                [
                    model(**tokenizer(*([i] if isinstance(i, str) else i), return_tensors="pt"))
                    .logits[0]
                    .numpy()
                    for i in items
                ]
            )

    return logits


@pytest.fixture(scope="module")
def dev():
    """Distinct SST-2 dev sentences (the corpus repeats none today; this keeps it so)."""
    return list(dict.fromkeys(sst2_sentences()))


@pytest.fixture(scope="module")
def dev_logits(classify, dev) -> np.ndarray:
    return classify(dev)


def _positive(logits: np.ndarray) -> np.ndarray:
    """Softmax probability of label 1."""
    return 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))


def test_each_label_wins_for_at_least_30_percent_of_dev(dev_logits):
    shares = np.bincount(dev_logits.argmax(axis=1), minlength=2) / len(dev_logits)
    print(f"\nlabel shares on SST-2 dev: {shares.round(3).tolist()}")
    assert shares.min() >= 0.3, shares


def test_different_sentences_score_far_apart(dev_logits, classify):
    # Every two sentences that the fidelity tests send, which a server could swap.
    served = dev_logits[:FIDELITY_SENTENCES]
    gaps = [float(np.abs(a - b).max()) for a, b in itertools.combinations(served, 2)]
    scores = _positive(dev_logits)
    close = np.abs(scores[:, None] - scores[None, :]) < 10 * TOLERANCE
    close_share = (close.sum() - len(scores)) / (len(scores) * (len(scores) - 1))
    seeds = _positive(classify(SEED_SENTENCES))
    print(
        f"\nmin |logit gap| between the {FIDELITY_SENTENCES} fidelity sentences {min(gaps):.2e}; "
        f"dev pairs with scores within {10 * TOLERANCE:g}: {close_share:.2%}; "
        f"seed sentences' scores {seeds.round(4).tolist()}"
    )
    assert min(gaps) > 50 * TOLERANCE
    assert close_share < 0.01
    assert abs(seeds[0] - seeds[1]) > 0.05
    assert np.abs(dev_logits).max() > 1  # logits spread over units, not hundredths


def test_a_sentence_and_its_text_pair_differ_clearly(dev, classify, dev_logits):
    firsts = dev[:100]
    pairs = list(zip(firsts, dev[100:200], strict=True))
    gaps = np.abs(classify(pairs) - dev_logits[:100]).max(axis=1)
    print(f"\n|logit gap| sentence vs pair: min {gaps.min():.3f}, median {np.median(gaps):.3f}")
    assert gaps.min() > 100 * TOLERANCE
    assert np.median(gaps) > 0.1
