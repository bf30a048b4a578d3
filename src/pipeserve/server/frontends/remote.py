"""A front end's view of the engine in the main process: the calls of `engine/core.py`'s
`Engine`, answered over a pipe (with several front ends, `--frontends`).

Requests keep their futures here, keyed by id; the engine sends each one's outputs back once,
stacked, with large arrays in shared memory. A call whose caller goes away is cancelled there
too. Admission is checked here against what the engine last said was waiting, so a full queue
refuses before tokenizing; the engine checks again when the request reaches it.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

from pipeserve.server.engine.queue import Request
from pipeserve.server.errors import Overloaded, Unavailable
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import (
    Answered,
    AskStatus,
    Cancel,
    Drain,
    EngineState,
    FromEngine,
    Output,
    Refused,
    StatusReply,
    Submit,
    ToEngine,
    WorkerReady,
    WorkerStatus,
)
from pipeserve.server.workers.shm import take

log = logging.getLogger("pipeserve.frontend")


class _Permit:
    """The engine holds the queue's places; a front end has nothing to release."""

    def release(self) -> None:
        pass


class RemoteEngine:
    def __init__(
        self,
        conn: Connection,
        max_queued_items: int,
        *,
        on_alive_change: Callable[[int], None],
        on_drain: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._max_items = max_queued_items
        self._on_alive_change = on_alive_change
        self._on_drain = on_drain
        self._ids = itertools.count(1)
        self._requests: dict[int, tuple[Request, tuple[int, ...]]] = {}
        self._asks: dict[int, asyncio.Future[StatusReply]] = {}
        self._alive = 0
        self._model: WorkerReady | None = None
        self.waiting = 0

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._on_readable)

    def send(self, message: ToEngine) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as error:
            raise Unavailable("the engine process is gone; retry shortly") from error

    # The engine's calls.

    @property
    def alive(self) -> int:
        return self._alive

    @property
    def model(self) -> WorkerReady:
        if self._model is None:
            raise Unavailable("the model is still loading; retry shortly")
        return self._model

    def admit(self, items: int) -> _Permit:
        if self.waiting + items > self._max_items:
            raise Overloaded(
                f"server overloaded: {self.waiting} items queued, limit "
                f"max_queued_items={self._max_items}; retry later",
                100,
            )
        return _Permit()

    def submit(
        self,
        sequences: Sequence[Encoded],
        outputs: tuple[Output, ...],
        deadline: float | None,
        permit: _Permit,
    ) -> Request:
        loop = asyncio.get_running_loop()
        request = Request(loop.create_future(), outputs, len(sequences))
        request_id = next(self._ids)
        self.send(
            Submit(
                request_id,
                tuple(s.input_ids for s in sequences),
                tuple(s.token_type_ids for s in sequences),
                outputs,
                deadline,
            )
        )
        self._requests[request_id] = (request, tuple(len(s) for s in sequences))
        request.future.add_done_callback(lambda _: self._on_done(request_id))
        return request

    def withdraw(self, request: Request) -> None:
        """Nothing to do here: the request's done callback sends the engine a Cancel, and the
        engine withdraws it there."""

    async def worker_status(self) -> list[WorkerStatus]:
        ask_id = next(self._ids)
        reply = self._asks[ask_id] = asyncio.get_running_loop().create_future()
        self.send(AskStatus(ask_id))
        return list((await reply).workers)

    # What the engine sends.

    def _on_done(self, request_id: int) -> None:
        held = self._requests.pop(request_id, None)
        if held is not None and held[0].future.cancelled():
            self.send(Cancel(request_id))

    def _on_readable(self) -> None:
        try:  # one message a call, as the supervisor reads its workers
            self._on_message(self._conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            log.error("the engine process is gone; this front end stops")
            self._alive = 0
            self._on_alive_change(0)
            for request, _ in self._requests.values():
                request.fail(Unavailable("the engine process is gone; retry shortly"))
            self._on_drain()

    def _on_message(self, message: FromEngine) -> None:
        match message:
            case Answered():
                self.waiting = message.waiting
                arrays = {name: take(value) for name, value in message.outputs.items()}
                held = self._requests.pop(message.request_id, None)
                if held is None:
                    return
                request, lengths = held
                token_level = self.model.token_level
                request.queue_ms, request.forward_ms = message.queue_ms, message.forward_ms
                # Whether each output is cut to the item's length, found once, not an item.
                columns = [(o, array, o in token_level) for o, array in arrays.items()]
                rows = [
                    {o: array[i, :length] if cut else array[i] for o, array, cut in columns}
                    for i, length in enumerate(lengths)
                ]
                if not request.gone:
                    request.future.set_result(rows)
            case Refused():
                self.waiting = message.waiting
                held = self._requests.pop(message.request_id, None)
                if held is not None:
                    held[0].fail(message.error)
            case EngineState():
                self.waiting = message.waiting
                self._model = message.model or self._model
                if message.alive != self._alive:
                    self._alive = message.alive
                    self._on_alive_change(message.alive)
            case StatusReply():
                self.waiting = message.waiting
                reply = self._asks.pop(message.ask_id, None)
                if reply is not None and not reply.done():
                    reply.set_result(message)
            case Drain():
                self._on_drain()
