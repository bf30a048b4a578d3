"""Stand-in workers for in-process engine tests: real input slots and pipes, answered by the
test, so that every step of the engine is exact."""

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import numpy as np

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.dispatch import PIPELINE_DEPTH
from pipeserve.server.engine.queue import Request
from pipeserve.server.metrics import Metrics
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import DeviceSpec, ForwardBatch, WorkerReady, WorkerSpec
from pipeserve.server.settings import DType, Quantize, Settings, Task
from pipeserve.server.workers.shm import InputSlots
from pipeserve.server.workers.supervisor import WorkerHandle

_BIG = 10_000  # a token budget and batch size no test reaches


class _Worker:
    """A worker slot as the dispatcher sees it, and the test's end of its pipe."""

    def __init__(self, worker_id: int, packs: bool = False) -> None:
        self.slots = InputSlots.create(PIPELINE_DEPTH, capacity=64)
        here, self.inbox = multiprocessing.Pipe()
        spec = WorkerSpec(
            worker_id,
            "tiny",
            None,
            Task.TEXT_CLASSIFICATION,
            DType.FLOAT32,
            Quantize.NONE,
            DeviceSpec(cpus=(0,)),
        )
        ready = WorkerReady(worker_id, 0, "cpu:0", "Tiny", ("logits",), ("logits",), packs=packs)
        process = multiprocessing.get_context("spawn").Process()  # never started
        self.handle = WorkerHandle(spec, process, here, self.slots, ready=ready)

    def received(self) -> ForwardBatch:
        assert self.inbox.poll(), "no batch was sent"
        return self.inbox.recv()

    def close(self) -> None:
        self.slots.close(unlink=True)
        self.inbox.close()


def _engine(max_queued_items: int = 64) -> Engine:
    """An engine with no worker processes: the tests play the workers."""
    settings = Settings(max_queued_items=max_queued_items, forward_timeout_s=600)
    card = SimpleNamespace(
        tokenizer=SimpleNamespace(pad_token_id=0, uses_token_type_ids=False), max_length=64
    )
    return Engine(settings, card, [], Metrics(), lambda alive: None)  # type: ignore[arg-type]


def _run(
    scenario: Callable[[Engine, list[_Worker]], Awaitable[None]],
    workers: int = 1,
    packs: bool = False,
) -> None:
    """Runs `scenario` on an engine with `workers` stand-ins (that pack, if `packs`)."""
    fakes = [_Worker(i, packs) for i in range(workers)]
    try:
        asyncio.run(_with_engine(scenario, fakes))
    finally:
        for fake in fakes:
            fake.close()


async def _with_engine(
    scenario: Callable[[Engine, list[_Worker]], Awaitable[None]], fakes: list[_Worker]
) -> None:
    engine = _engine()
    for fake in fakes:
        # As a worker's WorkerReady message arrives: the engine learns the model from it.
        engine.workers._on_message(fake.handle, fake.handle.ready)
    await scenario(engine, fakes)


def _submit(
    engine: Engine, *lengths: int, outputs: tuple = ("logits",), traceparent: str | None = None
) -> Request:
    """Queues a request of sequences of `lengths`, as a front end does for a caller whose span
    is `traceparent`."""
    sequences = [Encoded(np.arange(1, n + 1), None) for n in lengths]
    return engine.submit(sequences, outputs, None, engine.admit(len(sequences)), traceparent)
