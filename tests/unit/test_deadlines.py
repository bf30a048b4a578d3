"""The server's own deadline handling, step by step: an item whose deadline has passed is
never given to a worker, and a worker never computes a batch that waited in its inbox past
its deadline.

End to end these are hard to tell from grpc's own deadline: grpc.aio cancels a handler at the
caller's deadline, and a cancelled caller's items are dropped as gone, so a server that
ignored its deadlines entirely still passed tests/e2e/test_reliability.py. Here the deadline is
the only thing that can drop the work."""

import asyncio
import threading
import time
from multiprocessing import Pipe

import numpy as np

from pipeserve.server.engine.queue import Entry, Queue, Request
from pipeserve.server.errors import DeadlineExceeded
from pipeserve.server.schema import BatchDone, BatchSkipped, ForwardBatch, Stop
from pipeserve.server.workers.shm import InputSlots
from pipeserve.server.workers.worker import _serve


def test_an_expired_item_is_failed_and_never_taken_from_the_queue():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = Queue(max_items=8)
        requests, entries = [], []
        for deadline in (None, now - 0.001, now + 60):
            request = Request(loop.create_future(), ("logits",), (3,))
            requests.append(request)
            entries.append(Entry(request, 0, np.arange(3), None, now, deadline))
        queue.put(entries, queue.admit(len(entries), now))
        taken = queue.take(max_tokens=1000, max_size=8, overhead_tokens=0, now=loop.time())
        assert taken == [entries[0], entries[2]]
        expired = requests[1]
        assert isinstance(expired.future.exception(), DeadlineExceeded)
        assert not requests[0].gone and not requests[2].gone

    asyncio.run(scenario())


def test_a_worker_skips_a_batch_whose_deadline_passed_in_its_inbox(tiny_distilbert):
    import torch

    from pipeserve.server.backends.runner import load_runner
    from pipeserve.server.settings import Backend, DType, Quantize, Task

    runner = load_runner(
        Backend.TORCH,
        model=str(tiny_distilbert),
        revision=None,
        task=Task.TEXT_CLASSIFICATION,
        dtype=DType.FLOAT32,
        quantize=Quantize.NONE,
        device="cpu",
        threads=torch.get_num_threads(),  # this process's own setting, left as it is
    )
    slots = InputSlots.create(depth=2, capacity=16)
    server, worker = Pipe()
    loop = threading.Thread(target=_serve, args=(runner, worker, slots), daemon=True)
    loop.start()
    try:
        for slot in (0, 1):
            ids, _ = slots.views(slot, 1, 4)
            ids[0] = [101, 2023, 2003, 102]
        server.send(ForwardBatch(1, 0, 4, (4,), False, ("logits",), time.monotonic() - 0.001))
        server.send(ForwardBatch(2, 1, 4, (4,), False, ("logits",), time.monotonic() + 60))
        server.send(Stop())
        replies = [server.recv() for _ in range(2)]
        loop.join(60)
    finally:
        slots.close(unlink=True)
    assert [type(r) for r in replies] == [BatchSkipped, BatchDone]
    assert [r.batch_id for r in replies] == [1, 2]
    assert replies[1].outputs["logits"].shape == (1, 2)
