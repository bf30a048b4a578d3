"""Classify by windows (stride): a long text's score is the mean (or max) of the
text-classification pipeline's scores on the same windows, built here independently with the
tokenizer's return_overflowing_tokens; a text that fits is one window, as plain Classify."""

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import sst2_sentences
from tests.servers import pipeserve

WINDOW_LENGTH = 32
STRIDE = 8
SCORE_ATOL = 1e-5


def _long_texts() -> list[str]:
    sentences = sst2_sentences(48)
    return [" ".join(sentences[i : i + 3]) for i in range(0, 48, 3)]


@pytest.fixture(scope="module")
def window_scores(tiny_distilbert):
    """text -> the pipeline's scores (label -> score) on each of its windows."""
    import torch
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    classifier = pipeline("text-classification", model=str(tiny_distilbert))

    def scores(text: str) -> list[dict[str, float]]:
        windows = tokenizer(
            text,
            truncation=True,
            max_length=WINDOW_LENGTH,
            stride=STRIDE,
            return_overflowing_tokens=True,
        )["input_ids"]
        rows = []
        for ids in windows:
            inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
            labels = classifier.postprocess(classifier.forward(inputs), top_k=None, _legacy=False)
            rows.append({d["label"]: d["score"] for d in labels})
        return rows

    return scores


@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_windows_combine_the_pipelines_window_scores(client, window_scores, aggregation):
    texts = _long_texts()

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda t: client.classify(
                    [t],
                    top_k=None,
                    stride=STRIDE,
                    max_length=WINDOW_LENGTH,
                    window_aggregation=aggregation,
                )[0],
                texts,
            )
        )

    combine = np.mean if aggregation == "mean" else np.max
    for text, result in zip(texts, results, strict=True):
        windows = window_scores(text)
        assert result.windows == len(windows) >= 2
        expected = {label: float(combine([w[label] for w in windows])) for label in windows[0]}
        ranked = sorted(expected, key=expected.__getitem__, reverse=True)
        assert [s.label for s in result] == ranked
        np.testing.assert_allclose(
            [s.score for s in result], [expected[label] for label in ranked], atol=SCORE_ATOL
        )
    # Not just the first window's scores: the rest of the text counts.
    first_only = [window_scores(t)[0] for t in texts]
    assert any(
        abs(r[0].score - f[r[0].label]) > 1e-3 for r, f in zip(results, first_only, strict=True)
    )


def test_a_text_that_fits_is_one_window_as_plain_classify(client):
    texts = sst2_sentences(24)

    windowed = client.classify(texts, top_k=None, stride=STRIDE)
    plain = client.classify(texts, top_k=None)

    assert [r.windows for r in windowed] == [1] * len(texts)
    assert [r.windows for r in plain] == [1] * len(texts)
    assert [[s.label for s in r] for r in windowed] == [[s.label for s in r] for r in plain]
    # Two calls batch and pad differently, which moves float32 scores by about 1e-6: the
    # product's fidelity bound, 1e-5, is the one that holds whatever the batching.
    np.testing.assert_allclose(
        [[s.score for s in r] for r in windowed], [[s.score for s in r] for r in plain], atol=1e-5
    )


def test_classify_stream_takes_the_window_options(client):
    texts = _long_texts()[:4]
    unary = client.classify(texts, top_k=None, stride=STRIDE, max_length=WINDOW_LENGTH)

    streamed = {
        r.id: r
        for r in client.classify_stream(
            [(str(i), [t]) for i, t in enumerate(texts)],
            top_k=None,
            stride=STRIDE,
            max_length=WINDOW_LENGTH,
        )
    }

    for i, expected in enumerate(unary):
        [result] = streamed[str(i)].results
        assert result.windows == expected.windows >= 2
        assert [s.label for s in result] == [s.label for s in expected]
        np.testing.assert_allclose(
            [s.score for s in result], [s.score for s in expected], rtol=0, atol=1e-5
        )


def test_top_k_applies_to_the_combined_scores(client):
    text = _long_texts()[0]

    every = client.classify([text], top_k=None, stride=STRIDE, max_length=WINDOW_LENGTH)[0]
    best = client.classify([text], stride=STRIDE, max_length=WINDOW_LENGTH)[0]

    # Two calls, maybe on two workers that bucket their windows apart: equal within the bound.
    assert [(s.label, s.index) for s in best] == [(s.label, s.index) for s in every[:1]]
    np.testing.assert_allclose(best[0].score, every[0].score, rtol=0, atol=1e-5)
    assert best.windows == every.windows


def test_cli_classify_with_stride_prints_the_windows(address):
    text = _long_texts()[0]

    done = pipeserve(
        "classify",
        "--target",
        address,
        "--stride",
        "8",
        "--max-length",
        "32",
        "--top-k",
        "all",
        text,
    )

    assert done.returncode == 0, done.stderr
    [printed] = json.loads(done.stdout)
    assert printed["windows"] >= 2
    assert sorted(d["label"] for d in printed["labels"]) == ["NEGATIVE", "POSITIVE"]


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (
            pb.ClassifyRequest(
                inputs=[
                    pb.ModelInput(text="fine"),
                    pb.ModelInput(pair=pb.TextPair(text="a", text_pair="b")),
                ],
                stride=4,
            ),
            "inputs[1] is a pair or token ids",
        ),
        (
            pb.ClassifyRequest(
                inputs=[pb.ModelInput(text="fine")],
                stride=30,
                options=pb.TokenizeOptions(max_length=32),
            ),
            "stride 30",
        ),
        (
            pb.ClassifyRequest(inputs=[pb.ModelInput(text="fine")], stride=4, window_aggregation=9),
            "window_aggregation",
        ),
        (pb.ClassifyRequest(inputs=[pb.ModelInput(text="")], stride=4), "inputs[0].text is empty"),
    ],
)
def test_bad_window_requests_are_invalid_argument(address, request_, named):
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        InferenceStub(channel).Classify(request_, timeout=60)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details()


def test_client_checks_window_options(client):
    with pytest.raises(ValueError, match="stride"):
        client.classify(["fine"], stride=-1)
    with pytest.raises(ValueError, match="window_aggregation"):
        client.classify(["fine"], stride=4, window_aggregation="median")
