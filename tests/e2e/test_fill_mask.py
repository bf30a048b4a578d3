"""FillMask against transformers' fill-mask pipeline on the same tiny masked LM: one mask and
several, top_k, targets, many texts at once; its bad inputs; and what a masked LM serves."""

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

SCORE_ATOL = 1e-5


def _masked(count: int = 32) -> list[str]:
    """SST-2 sentences with one word masked (the third word, say), and a few with two."""
    texts = []
    for i, sentence in enumerate(sst2_sentences(count)):
        words = sentence.split()
        words[min(2, len(words) - 1)] = "[MASK]"
        if i % 5 == 0 and len(words) > 5:
            words[-2] = "[MASK]"
        texts.append(" ".join(words))
    return texts


# The name the masked LM is served under by the every_task server.
MLM = "mlm"


@pytest.fixture(scope="module")
def mlm_server(every_task):
    return every_task


@pytest.fixture(scope="module")
def mlm(mlm_server) -> Iterator[ModelClient]:
    with ModelClient(mlm_server.address, MLM) as client:
        yield client


@pytest.fixture(scope="module")
def fill_mask(tiny_bert_mlm):
    from transformers import pipeline

    return pipeline("fill-mask", model=str(tiny_bert_mlm))


def _reference(fill_mask, texts: list[str], **kwargs) -> list[list[list[dict]]]:
    """The pipeline's answer per text, per mask (a one-mask text made a list of one)."""
    answers = []
    for text in texts:
        answer = fill_mask(text, **kwargs)
        answers.append(answer if isinstance(answer[0], list) else [answer])
    return answers


def _assert_equal(results, reference) -> None:
    assert len(results) == len(reference)
    for masks, expected in zip(results, reference, strict=True):
        assert len(masks) == len(expected)
        for mask, candidates in zip(masks, expected, strict=True):
            got = [c.to_dict() for c in mask.candidates]
            assert [{k: v for k, v in c.items() if k != "score"} for c in got] == [
                {k: v for k, v in c.items() if k != "score"} for c in candidates
            ]
            np.testing.assert_allclose(
                [c["score"] for c in got], [c["score"] for c in candidates], rtol=0, atol=SCORE_ATOL
            )


def test_fill_mask_equals_the_pipeline(mlm, fill_mask):
    texts = _masked()
    reference = _reference(fill_mask, texts)

    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(lambda t: mlm.fill_mask([t])[0], texts))
    together = mlm.fill_mask(texts)

    _assert_equal(singles, reference)
    _assert_equal(together, reference)
    assert any(len(masks) == 2 for masks in together)  # several masks in a text, too
    assert all(len(mask.candidates) == 5 for masks in together for mask in masks)
    # Each mask's position is the [MASK] token's.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fill_mask.model.name_or_path)
    for text, masks in zip(texts, together, strict=True):
        ids = tokenizer(text)["input_ids"]
        positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        assert [m.position for m in masks] == positions


def _several_masks(count: int = 24) -> list[str]:
    """SST-2 sentences of varied lengths, with one to three words masked."""
    texts = []
    for i, sentence in enumerate(sst2_sentences(count)):
        words = sentence.split()
        for place in range(min(i % 3 + 1, len(words))):
            words[(place * 7 + i) % len(words)] = "[MASK]"
        texts.append(" ".join(words))
    return texts


@pytest.mark.parametrize(
    "served_by",
    [
        "torch",
        pytest.param("frontends-2", marks=pytest.mark.slow),
        pytest.param("openvino", marks=pytest.mark.slow),
    ],
)
def test_several_masks_in_batches_of_varied_lengths(
    request, tiny_bert_mlm, fill_mask, served_by, servers, openvino_cache
):
    """The workers send back the mask tokens' rows alone: texts with different numbers of
    masks and lengths in one batch, from concurrent callers, still get the pipeline's answer.
    The every_task servers' masked LM waits 200 ms for a batch to fill, as the openvino one."""
    if served_by == "openvino":
        pytest.importorskip("openvino")
        flags = ("--backend", "openvino", "--cache-dir", str(openvino_cache))
        server = servers.get(tiny_bert_mlm, "--max-wait-ms", "200", *flags)
        model = ""
    else:
        fixture = "every_task" if served_by == "torch" else "every_task_two_front_ends"
        server, model = request.getfixturevalue(fixture), MLM
    texts = _several_masks()
    reference = _reference(fill_mask, texts)
    chunks = [texts[i : i + 3] for i in range(0, len(texts), 3)]

    with ModelClient(server.address, model) as client, ThreadPoolExecutor(8) as pool:
        answers = [masks for chunk in pool.map(client.fill_mask, chunks) for masks in chunk]

    _assert_equal(answers, reference)
    assert {len(masks) for masks in answers} == {1, 2, 3}


def test_top_k_and_targets(mlm, fill_mask):
    texts = _masked(12)
    targets = ["good", "bad", "movie", "fine", "unbelievable"]  # the last is not one token

    top = mlm.fill_mask(texts, top_k=12)
    chosen = mlm.fill_mask(texts, targets=targets, top_k=3)

    _assert_equal(top, _reference(fill_mask, texts, top_k=12))
    _assert_equal(chosen, _reference(fill_mask, texts, targets=targets, top_k=3))


def test_async_client_fill_mask(mlm_server, fill_mask):
    texts = _masked(12)

    async def main():
        async with AsyncClient(mlm_server.address, timeout=120) as client:
            return [
                r[0]
                for r in await asyncio.gather(*(client.fill_mask([t], model=MLM) for t in texts))
            ]

    _assert_equal(asyncio.run(main()), _reference(fill_mask, texts))


def test_cli_fill_mask(mlm_server, fill_mask):
    texts = ["the movie was [MASK] .", "a [MASK] film , [MASK] acted"]

    done = pipeserve(
        "fill-mask", "--target", mlm_server.address, "--model", MLM, "--top-k", "3", *texts
    )

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expected = [fill_mask(t, top_k=3) for t in texts]
    for shown, reference in zip(printed, expected, strict=True):
        flat = [shown] if isinstance(shown[0], dict) else shown
        want = [reference] if isinstance(reference[0], dict) else reference
        assert [[c["token"] for c in mask] for mask in flat] == [
            [c["token"] for c in mask] for mask in want
        ]
        assert [[c["sequence"] for c in mask] for mask in flat] == [
            [c["sequence"] for c in mask] for mask in want
        ]


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        (
            pb.FillMaskRequest(inputs=["a [MASK] day", "no mask here"]),
            "inputs[1] has no mask token",
        ),
        (pb.FillMaskRequest(inputs=["a [MASK] day"], top_k=0), "top_k"),
        (pb.FillMaskRequest(inputs=["a [MASK] day"], targets=["good", " "]), "targets[1]"),
        (pb.FillMaskRequest(inputs=["a [MASK] day", ""]), "inputs[1].text is empty"),
        (pb.FillMaskRequest(), "inputs is empty"),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_item(mlm_server, request_, named):
    with (
        grpc.insecure_channel(mlm_server.address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        InferenceStub(channel).FillMask(for_model(request_, MLM), timeout=60)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details()


def test_client_checks_options_before_calling(mlm):
    with pytest.raises(ValueError, match="top_k"):
        mlm.fill_mask(["a [MASK] day"], top_k=0)
    with pytest.raises(TypeError, match="targets"):
        mlm.fill_mask(["a [MASK] day"], targets="good")
    with pytest.raises(TypeError, match="inputs"):
        mlm.fill_mask("a [MASK] day")


# --- What a masked LM serves --------------------------------------------------------------------


def test_model_info_lists_what_a_masked_lm_serves(mlm):
    info = mlm.model_info()

    assert info.task == "fill-mask"
    assert info.served_rpcs == ["Tokenize", "Forward", "FillMask", "ModelInfo", "ListModels"]
    assert info.mask_token == "[MASK]"


def test_a_masked_lm_refuses_the_other_heads_rpcs(mlm):
    with pytest.raises(PipeserveError) as tokens:
        mlm.classify_tokens(["fine"])
    [streamed] = list(mlm.classify_stream([("a", ["fine"])]))

    assert tokens.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "ClassifyTokens needs a token-classification model" in tokens.value.details
    assert "is served as fill-mask (it serves Tokenize, Forward, FillMask" in tokens.value.details
    assert streamed.error is not None
    assert streamed.error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Classify needs a sequence-classification model" in streamed.error.details
