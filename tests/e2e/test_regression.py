"""Classify on a regression head: raw scores, as transformers' text-classification pipeline
gives them (no sigmoid on the single output), for many texts sent at once."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.helpers import sst2_sentences
from tests.servers import ModelClient


@pytest.fixture(scope="module")
def regressor_client(every_task) -> Iterator[ModelClient]:
    with ModelClient(every_task.address, "reg", timeout=60) as client:
        yield client


def test_regression_scores_are_the_pipelines_raw_outputs(regressor_client, tiny_regressor):
    from transformers import pipeline

    texts = sst2_sentences(48)
    reference = pipeline("text-classification", model=str(tiny_regressor), top_k=None)(texts)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: regressor_client.classify([t])[0], texts))

    expected = np.array([row[0]["score"] for row in reference])
    scores = np.array([row[0].score for row in results])
    assert [row[0].label for row in results] == [row[0]["label"] for row in reference]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    # Raw outputs, not squashed into [0, 1] by a sigmoid.
    assert (scores < 0).any() or (scores > 1).any()


def test_model_info_lists_what_a_classifier_serves(regressor_client):
    info = regressor_client.model_info()

    assert info.served_rpcs == [
        "Tokenize",
        "Forward",
        "Classify",
        "ClassifyStream",
        "ModelInfo",
        "Rerank",  # one label: a cross-encoder's head; no entailment label for zero-shot
        "ListModels",
    ]
