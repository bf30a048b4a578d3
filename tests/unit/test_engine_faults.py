"""Workers that hang, in process: the real engine, the real worker loop in threads and the tiny
classifier (tests/unit/engine_harness.py). A hung worker is killed and its batch retried once on
another; items whose retry meets a hung worker too fail UNAVAILABLE; a respawn that fails to
start is tried again. What only processes show (SIGKILL, SIGTERM, shared memory left behind)
stays in tests/e2e/test_reliability.py."""

import asyncio

import numpy as np
import pytest

from pipeserve.server.errors import Unavailable
from tests.unit.engine_harness import KILLED, engine_of, until


def test_hung_worker_is_killed_and_its_batch_retried_on_another(tiny_distilbert, tiny_logits):
    sentence = next(iter(tiny_logits))

    async def scenario() -> None:
        async with engine_of(tiny_distilbert, workers=2, forward_timeout_s=1) as harness:
            hung = harness.workers.started[0]
            harness.workers.hold_next[0].set()
            # Idle workers are used in turn, so one of the first two calls meets the hung one.
            for _ in range(2):
                outputs = await harness.submit([sentence]).future
                np.testing.assert_allclose(
                    outputs.item(0)["logits"], tiny_logits[sentence], atol=1e-5
                )
            await harness.alive(2)
            assert hung.exitcode == KILLED
            assert harness.engine.workers.restarts == {0: 1, 1: 0}
            assert harness.workers.started[0] is not hung

    asyncio.run(scenario())


def test_a_respawn_the_system_refuses_is_tried_again(tiny_distilbert, tiny_logits):
    """A worker's respawn that fails to start (a fork refused for want of memory or of
    processes) is tried again after the next back-off, not given up."""
    sentence = next(iter(tiny_logits))

    async def scenario() -> None:
        async with engine_of(tiny_distilbert, workers=2, forward_timeout_s=1) as harness:
            hung = harness.workers.started[0]
            harness.workers.refused_starts[0] = 1
            harness.workers.hold_next[0].set()
            for _ in range(2):
                outputs = await harness.submit([sentence]).future
                np.testing.assert_allclose(
                    outputs.item(0)["logits"], tiny_logits[sentence], atol=1e-5
                )
            await until(lambda: harness.engine.alive == 2)
            assert harness.workers.refused_starts[0] == 0  # the refused start was tried
            assert harness.workers.started[0] is not hung
            outputs = await harness.submit([sentence]).future
            np.testing.assert_allclose(outputs.item(0)["logits"], tiny_logits[sentence], atol=1e-5)

    asyncio.run(scenario())


def test_items_fail_unavailable_after_their_retry_also_dies(tiny_distilbert):
    async def scenario() -> None:
        async with engine_of(tiny_distilbert, workers=2, forward_timeout_s=0.5) as harness:
            for hold in harness.workers.hold_next:
                hold.set()
            with pytest.raises(Unavailable) as failed:
                await harness.submit(["a sentence nobody will classify"]).future
            assert "died" in str(failed.value)
            assert harness.engine.workers.restarts == {0: 1, 1: 1}

    asyncio.run(scenario())
