"""The serving path's own guarantees, in process (tests/unit/engine_harness.py: the real
request path, engine and worker loop): admission before any work, a stream that holds a bounded
number of requests, and one bad item failing alone. Against real servers:
tests/e2e/test_serving_path.py."""

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from pipeserve.server.edge.status import status_of
from pipeserve.server.edge.streams import answer_each
from pipeserve.server.errors import InvalidInput, ModelFailed, Overloaded
from pipeserve.server.pipeline.inputs import TextOptions
from tests.helpers import in_process
from tests.unit.engine_harness import engine_of, until

# Word pieces of bert-base-uncased below this id: [PAD], [unused*], punctuation, single letters
# and "the" (1996). A model with this vocabulary raises on any other word.
_SMALL_VOCAB = 2000


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory, minilm_path):
    """A classifier whose embedding is smaller than its tokenizer's vocabulary: the model
    itself raises (IndexError) on a text with a common word, as a mismatched checkpoint does."""
    torch.manual_seed(3)
    config = DistilBertConfig(
        vocab_size=_SMALL_VOCAB, dim=32, hidden_dim=64, n_layers=1, n_heads=2, num_labels=2
    )
    folder = tmp_path_factory.mktemp("small-vocab")
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def test_a_full_queue_refuses_before_tokenizing(tiny_distilbert, tiny_logits):
    # Untruncated and over the model's length: tokenizing it would end in INVALID_ARGUMENT,
    # so RESOURCE_EXHAUSTED shows the call was refused before its text was tokenized.
    too_long = ["word " * 800]
    untruncated = TextOptions(truncation=False)
    held, *behind = list(tiny_logits)[:3]

    async def scenario() -> None:
        async with engine_of(tiny_distilbert, max_queued_items=2) as harness:
            with harness.workers.paused(0):
                running = asyncio.create_task(harness.logits(held))
                await until(lambda: harness.busy(0))
                waiting = [asyncio.create_task(harness.logits(s)) for s in behind]
                await until(lambda: harness.engine.waiting == 2)
                with pytest.raises(Overloaded) as refused:
                    await harness.infer.run(too_long, untruncated, ("logits",), None)
                status = status_of(refused.value)
                assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "max_queued_items=2" in status.message
                assert status.retry_after_ms is not None and status.retry_after_ms > 0
            # Everything accepted before the refusal completes once the worker resumes.
            answers = await asyncio.gather(running, *waiting)
            for sentence, row in zip([held, *behind], answers, strict=True):
                np.testing.assert_allclose(row, tiny_logits[sentence], rtol=0, atol=1e-5)
            # With room in the queue, the same request gets as far as its tokens.
            with pytest.raises(InvalidInput) as measured:
                await harness.infer.run(too_long, untruncated, ("logits",), None)
            assert status_of(measured.value).code == grpc.StatusCode.INVALID_ARGUMENT
            assert "tokens" in str(measured.value)

    asyncio.run(scenario())


def test_a_stream_holds_at_most_its_bound_of_requests(tiny_distilbert):
    bound = 2
    sentences = [f"stream sentence number {i}" for i in range(10)]
    (expected,) = in_process(
        tiny_distilbert, AutoModelForSequenceClassification, sentences, "logits"
    )

    async def scenario() -> dict[str, np.ndarray]:
        async with engine_of(tiny_distilbert) as harness:

            async def requests() -> AsyncIterator[str]:
                for sentence in sentences:
                    yield sentence

            async def answer(sentence: str) -> tuple[str, np.ndarray]:
                return sentence, await harness.logits(sentence)

            async def read_all() -> list[tuple[str, np.ndarray]]:
                return [r async for r in answer_each(requests(), answer, bound)]

            with harness.workers.paused(0):
                stream = asyncio.create_task(read_all())
                await until(lambda: harness.busy(0))
                # The ones the worker runs plus the ones waiting, however batched: never more
                # than the bound.
                await until(lambda: harness.calls == bound)
                # A call of its own still gets in: the engine is not stuck, only the stream
                # is held back.
                marker = asyncio.create_task(answer("a call of its own"))
                await until(lambda: harness.calls == bound + 1)
                assert harness.calls == bound + 1
            results = await stream
            assert (await marker)[0] == "a call of its own"
        return dict(results)

    results = asyncio.run(scenario())
    assert sorted(results) == sorted(sentences)
    for sentence, row in zip(sentences, expected, strict=True):
        np.testing.assert_allclose(results[sentence], row, rtol=0, atol=1e-5)


def test_one_bad_item_fails_alone_and_its_batch_mates_get_their_results(small_vocab_model, caplog):
    good = ["a b c .", "the a !", "x y z", "the the", "q , r"]
    bad = "hello world"  # word pieces past the model's vocabulary
    (expected,) = in_process(small_vocab_model, DistilBertForSequenceClassification, good, "logits")

    async def scenario() -> list[object]:
        # A long wait and a big batch: the six requests, queued together, go as one batch.
        async with engine_of(
            small_vocab_model, max_wait_ms=2000, max_batch_size=len(good) + 1
        ) as harness:
            requests = [harness.submit([text]) for text in [*good, bad]]
            answers = await asyncio.gather(*(r.future for r in requests), return_exceptions=True)
            assert [w.ready for w in await harness.engine.worker_status()] == [True]
            return answers

    with caplog.at_level(logging.INFO):
        *rows, failed = asyncio.run(scenario())
    assert isinstance(failed, ModelFailed)
    assert status_of(failed).code == grpc.StatusCode.INTERNAL
    assert "IndexError" not in str(failed)  # details stay in the server log
    assert "IndexError" in caplog.text
    for row, reference in zip(rows, expected, strict=True):
        np.testing.assert_allclose(row.item(0)["logits"], reference, rtol=0, atol=1e-5)
    # They shared the batch that failed.
    assert f"({len(good) + 1} items) failed in the model" in caplog.text
    assert "running it in halves" in caplog.text
