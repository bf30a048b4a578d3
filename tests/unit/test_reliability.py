"""Reliability in process (tests/unit/engine_harness.py): a batch held open to fill, and
expired and cancelled items never computed. Hung workers: test_engine_faults.py; a full queue:
test_serving_path.py. Killed workers, SIGTERM and paused workers on real servers:
tests/e2e/test_reliability.py."""

import asyncio

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from tests.helpers import in_process
from tests.unit.engine_harness import engine_of, until


def test_max_wait_holds_a_batch_open_until_it_is_full(tiny_distilbert):
    """max_wait_ms: a free worker waits for more items (here up to a minute) before it takes a
    batch, so calls sent one by one, each queued before the next, go as one batch."""
    # Of about one length, so that the batcher would not split them to save padding.
    sentences = [*(f"sentence number {count}" for count in range(1, 4)), "the fourth fills it"]
    (expected,) = in_process(
        tiny_distilbert, AutoModelForSequenceClassification, sentences, "logits"
    )

    async def scenario() -> None:
        async with engine_of(tiny_distilbert, max_wait_ms=60000, max_batch_size=4) as harness:
            calls = []
            for count, sentence in enumerate(sentences[:3], start=1):
                calls.append(asyncio.create_task(harness.logits(sentence)))
                # Held in the queue, not sent to the idle worker.
                await until(lambda n=count: harness.engine.waiting == n)
                assert not harness.busy(0)
            calls.append(asyncio.create_task(harness.logits(sentences[3])))
            for row, reference in zip(await asyncio.gather(*calls), expected, strict=True):
                np.testing.assert_allclose(row, reference, rtol=0, atol=1e-5)
            assert harness.computed(0) == (1, 4)

    asyncio.run(scenario())


def test_expired_and_cancelled_items_are_never_computed(tiny_distilbert):
    async def scenario() -> None:
        async with engine_of(tiny_distilbert) as harness:
            with harness.workers.paused(0):
                busy = asyncio.create_task(harness.logits("held"))
                await until(lambda: harness.busy(0))
                # Long enough to be queued first however loaded the machine; checked below,
                # since an item that expired before it was queued proves nothing.
                expiring = [
                    asyncio.create_task(harness.logits(f"late {i}", timeout_s=2)) for i in range(3)
                ]
                cancelled = [
                    asyncio.create_task(harness.logits(f"gone {i}", timeout_s=60)) for i in range(2)
                ]
                await until(lambda: harness.engine.waiting == 5)
                assert not any(task.done() for task in expiring)
                for task in cancelled:
                    task.cancel()
                for task in expiring:
                    with pytest.raises(TimeoutError):
                        await task
                # Once the deadline has passed nothing waits, not even the batch in the
                # worker's inbox. test_deadlines.py checks the server's own expiry.
                await until(lambda: harness.engine.waiting == 0)
            await busy
            # The worker takes batches in order: once this one is answered, the withdrawn
            # one has been skipped or computed.
            await harness.logits("after the pause")
            # The worker computed the held item, the last one, and nothing else.
            assert harness.computed(0)[1] == 2

    asyncio.run(scenario())
