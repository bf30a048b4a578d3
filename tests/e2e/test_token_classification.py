"""ClassifyTokens against transformers' token-classification pipeline on the same tiny NER
checkpoint, for every aggregation strategy, long texts by windows, many texts at once; its bad
inputs; and what a token classifier serves (ModelInfo.served_rpcs, FAILED_PRECONDITION). The
RPC table of every task: tests/unit/test_token_classification.py."""

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from pipeserve.client import AsyncClient, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import sst2_sentences
from tests.servers import ModelClient, for_model, pipeserve

STRATEGIES = ["none", "simple", "first", "average", "max"]
SCORE_ATOL = 1e-5
# Beyond SST-2's lower-case sentences: capitals, accents, an unknown character, punctuation
# glued to words, so that subwords, [UNK] and offsets are all exercised.
ODD_TEXTS = [
    "Jean-Baptiste Poquelin lived in Montréal, then in Paris.",
    "Hugging Face's CEO met Dr. Smith at 10:30 ☃ near Zürich!!",
    "unbelievably, the reviewers loved it",
]
# A short model limit for the window tests, so that a text of a few sentences needs several.
WINDOW_LENGTH = 32


def _texts(count: int = 40) -> list[str]:
    return sst2_sentences(count) + ODD_TEXTS


def _long_texts() -> list[str]:
    sentences = sst2_sentences(60)
    return [" ".join(sentences[i : i + 4]) for i in range(0, 60, 4)]


# The name the token classifier is served under by the every_task servers.
NER = "ner"


@pytest.fixture(scope="module")
def ner_server(every_task):
    return every_task


@pytest.fixture(scope="module")
def ner(ner_server) -> Iterator[ModelClient]:
    with ModelClient(ner_server.address, NER) as client:
        yield client


def _pipeline(path, **kwargs):
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs.pop("tokenizer_kwargs", {}))
    return pipeline("token-classification", model=str(path), tokenizer=tokenizer, **kwargs)


def _assert_equal(results, reference) -> None:
    """Same entities (labels, words, offsets, indices) in the same order, scores within
    SCORE_ATOL: results as the client returns them, reference as the pipeline does."""
    assert len(results) == len(reference)
    for got, expected in zip(results, reference, strict=True):
        assert [{k: v for k, v in e.to_dict().items() if k != "score"} for e in got] == [
            {k: v for k, v in e.items() if k != "score"} for e in expected
        ]
        np.testing.assert_allclose(
            [e.score for e in got], [float(e["score"]) for e in expected], rtol=0, atol=SCORE_ATOL
        )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_classify_tokens_equals_the_pipeline(ner, tiny_bert_ner, strategy):
    texts = _texts()
    reference = _pipeline(tiny_bert_ner, aggregation_strategy=strategy)(texts)

    # One text per call, many calls at once (batched and padded together), and one call of all.
    with ThreadPoolExecutor(8) as pool:
        singles = list(
            pool.map(lambda t: ner.classify_tokens([t], aggregation_strategy=strategy)[0], texts)
        )
    together = ner.classify_tokens(texts, aggregation_strategy=strategy)

    _assert_equal(singles, reference)
    _assert_equal(together, reference)
    assert all(r.windows == 1 for r in together)
    # The random head is not degenerate: several labels, offsets that are the text's.
    assert len({e.label for r in together for e in r}) >= 2
    for text, result in zip(texts, together, strict=True):
        for entity in result:
            assert 0 <= entity.start < entity.end <= len(text)


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_long_texts_by_windows_equal_the_pipeline_with_stride(ner, tiny_bert_ner, strategy):
    texts = _long_texts()
    reference = _pipeline(
        tiny_bert_ner,
        aggregation_strategy=strategy,
        stride=8,
        tokenizer_kwargs={"model_max_length": WINDOW_LENGTH},
    )(texts)

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda t: ner.classify_tokens(
                    [t], aggregation_strategy=strategy, stride=8, max_length=WINDOW_LENGTH
                )[0],
                texts,
            )
        )

    _assert_equal(results, reference)
    assert min(r.windows for r in results) >= 3
    # Entities from beyond the first window: the whole text was labelled.
    assert max(e.end for r in results for e in r) > max(len(t) for t in texts) // 2


def test_ignore_labels(ner, tiny_bert_ner):
    texts = _texts(12)

    none_ignored = ner.classify_tokens(texts, ignore_labels=[])
    no_per = ner.classify_tokens(texts, aggregation_strategy="simple", ignore_labels=["PER"])

    _assert_equal(none_ignored, _pipeline(tiny_bert_ner, ignore_labels=[])(texts))
    assert "O" in {e.label for r in none_ignored for e in r}
    _assert_equal(
        no_per,
        _pipeline(tiny_bert_ner, aggregation_strategy="simple", ignore_labels=["PER"])(texts),
    )
    assert "PER" not in {e.label for r in no_per for e in r}


def test_async_client_classify_tokens(ner_server, tiny_bert_ner):
    texts = _texts(16)
    reference = _pipeline(tiny_bert_ner, aggregation_strategy="first")(texts)

    async def main():
        async with AsyncClient(ner_server.address, timeout=120) as client:
            calls = [
                client.classify_tokens([t], aggregation_strategy="first", model=NER) for t in texts
            ]
            return [r[0] for r in await asyncio.gather(*calls)]

    _assert_equal(asyncio.run(main()), reference)


@pytest.mark.slow
def test_classify_tokens_through_two_front_ends(every_task_two_front_ends, tiny_bert_ner):
    texts = _long_texts()[:6] + _texts(10)
    reference = _pipeline(
        tiny_bert_ner,
        aggregation_strategy="simple",
        stride=8,
        tokenizer_kwargs={"model_max_length": WINDOW_LENGTH},
    )(texts)
    with ModelClient(every_task_two_front_ends.address, NER) as client:
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(
                    lambda t: client.classify_tokens(
                        [t], aggregation_strategy="simple", stride=8, max_length=WINDOW_LENGTH
                    )[0],
                    texts,
                )
            )
        assert client.model_info().frontends == 2
    _assert_equal(results, reference)


def test_cli_classify_tokens(ner_server, tiny_bert_ner):
    texts = ODD_TEXTS
    reference = _pipeline(tiny_bert_ner, aggregation_strategy="max")(texts)

    done = pipeserve(
        "classify-tokens",
        "--target",
        ner_server.address,
        "--model",
        NER,
        "--aggregation-strategy",
        "max",
        *texts,
    )

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [[{k: v for k, v in e.items() if k != "score"} for e in r] for r in printed] == [
        [{k: v for k, v in e.items() if k != "score"} for e in r] for r in reference
    ]


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (pb.ClassifyTokensRequest(), "inputs is empty"),
        (pb.ClassifyTokensRequest(inputs=["fine", ""]), "inputs[1]"),
        (
            pb.ClassifyTokensRequest(inputs=["fine"], aggregation_strategy=99),
            "aggregation_strategy",
        ),
        (pb.ClassifyTokensRequest(inputs=["fine"], stride=4), "aggregation_strategy"),
        (
            pb.ClassifyTokensRequest(
                inputs=["fine"],
                aggregation_strategy=pb.AGGREGATION_STRATEGY_SIMPLE,
                stride=30,
                options=pb.TokenizeOptions(max_length=32),
            ),
            "stride 30",
        ),
        (
            pb.ClassifyTokensRequest(
                inputs=["fine", "word " * 600],
                options=pb.TokenizeOptions(truncation=False),
            ),
            "inputs[1] has 602 tokens",
        ),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(ner_server, request_, named):
    with (
        grpc.insecure_channel(ner_server.address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        InferenceStub(channel).ClassifyTokens(for_model(request_, NER), timeout=60)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details()


def test_client_checks_options_before_calling(ner):
    with pytest.raises(ValueError, match="aggregation_strategy"):
        ner.classify_tokens(["fine"], aggregation_strategy="longest")
    with pytest.raises(ValueError, match="stride"):
        ner.classify_tokens(["fine"], aggregation_strategy="simple", stride=-1)
    with pytest.raises(TypeError, match="inputs"):
        ner.classify_tokens("fine")
    with pytest.raises(TypeError, match=r"inputs\[0\]"):
        ner.classify_tokens([("a", "pair")])


# --- What a token classifier serves ---------------------------------------------------------------


def test_model_info_lists_what_a_token_classifier_serves(ner, tiny_bert_ner):
    from transformers import AutoConfig

    info = ner.model_info()

    assert info.task == "token-classification"
    assert info.served_rpcs == ["Tokenize", "Forward", "ClassifyTokens", "ModelInfo", "ListModels"]
    config = AutoConfig.from_pretrained(tiny_bert_ner)
    assert info.labels == [config.id2label[i] for i in range(config.num_labels)]


def test_a_token_classifier_refuses_the_other_heads_rpcs(ner):
    with pytest.raises(PipeserveError) as fill:
        ner.fill_mask(["the [MASK] is fine"])
    with pytest.raises(PipeserveError) as classify:
        ner.classify(["fine"])

    assert fill.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "FillMask needs a masked language model (AutoModelForMaskedLM)" in fill.value.details
    assert "is served as token-classification" in fill.value.details
    assert classify.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "AutoModelForSequenceClassification" in classify.value.details
    assert "ClassifyTokens" in classify.value.details  # what it does serve
