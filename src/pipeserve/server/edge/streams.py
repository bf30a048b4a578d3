"""A bidirectional stream whose requests are answered each as its own task, through the
shared batcher, the answers written as they finish: pipeserve.v1's ClassifyStream and the
Open Inference Protocol's ModelStreamInfer."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


async def answer_each(
    requests: AsyncIterator[_Request],
    answer: Callable[[_Request], Awaitable[_Response]],
    in_flight: int,
) -> AsyncIterator[_Response]:
    """`answer(request)` for each request, yielded as they finish; `answer` answers a failed
    request itself (the stream goes on).

    At most `in_flight` requests are held at once, computing or waiting to be written; beyond
    that the stream is not read, and HTTP/2 flow control holds the sender back."""
    responses: asyncio.Queue[_Response | None] = asyncio.Queue()
    room = asyncio.Semaphore(in_flight)
    answering: set[asyncio.Task] = set()

    async def respond(message: _Request) -> None:
        await responses.put(await answer(message))

    async def read() -> None:
        try:
            messages = aiter(requests)
            while True:
                await room.acquire()
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    break
                task = asyncio.create_task(respond(message))
                answering.add(task)
                task.add_done_callback(answering.discard)
            await asyncio.gather(*answering)
        finally:  # wakes the writer below, also when reading failed
            await responses.put(None)

    reader = asyncio.create_task(read())
    try:
        while (response := await responses.get()) is not None:
            yield response
            room.release()
        await reader  # surfaces a failed read (e.g. an undecodable message)
    finally:
        reader.cancel()
        for task in answering:
            task.cancel()
