"""The engine's end of the front ends' pipes (with several front ends, `--frontends`).

Every front end's requests go into the one queue, so a batch can hold items of several front
ends. Each request's outputs go back to its own front end, stacked per output (token-level
ones padded to the longest item), large arrays in shared memory. A front end that dies takes
its requests with it: they are cancelled here, so their items are never computed.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.queue import Request, stack_rows
from pipeserve.server.errors import PipeserveError
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import (
    Answered,
    AskStatus,
    Cancel,
    EngineState,
    FromEngine,
    Listening,
    Refused,
    StatusReply,
    Submit,
    ToEngine,
)
from pipeserve.server.workers.shm import share

log = logging.getLogger("pipeserve.hub")


@dataclass(eq=False)
class FrontendLink:
    index: int
    conn: Connection
    requests: dict[int, Request] = field(default_factory=dict)
    # Set by its Listening message; the front end serves once this is set.
    port: int | None = None

    def send(self, message: FromEngine) -> None:
        # Once gone, its reader sees EOF and cancels its requests.
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(message)


class Hub:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._links: dict[int, FrontendLink] = {}
        self._listening: dict[int, asyncio.Future[int]] = {}

    def attach(self, index: int, conn: Connection) -> asyncio.Future[int]:
        """Serves a front end's pipe; the future gets the port it listens on."""
        loop = asyncio.get_running_loop()
        link = FrontendLink(index, conn)
        self._links[index] = link
        listening = self._listening[index] = loop.create_future()
        loop.add_reader(conn.fileno(), self._on_readable, link)
        link.send(self._state())
        return listening

    def broadcast_state(self) -> None:
        state = self._state()
        for link in self._links.values():
            link.send(state)

    def _state(self) -> EngineState:
        engine = self._engine
        model = engine.model if engine.alive else None
        return EngineState(engine.alive, model, engine.waiting)

    def _on_readable(self, link: FrontendLink) -> None:
        try:  # one message a call, as the supervisor reads its workers
            self._on_message(link, link.conn.recv())
        except (EOFError, OSError):
            loop = asyncio.get_running_loop()
            loop.remove_reader(link.conn.fileno())
            if self._links.get(link.index) is link:
                del self._links[link.index]
            for request in link.requests.values():
                self._cancel(request)
            listening = self._listening.pop(link.index, None)
            if listening is not None and not listening.done():
                listening.set_exception(EOFError(f"front end {link.index} exited"))

    def _on_message(self, link: FrontendLink, message: ToEngine) -> None:
        match message:
            case Submit():
                self._submit(link, message)
            case Cancel():
                request = link.requests.pop(message.request_id, None)
                if request is not None:
                    self._cancel(request)
            case AskStatus():
                task = asyncio.get_running_loop().create_task(self._engine.worker_status())
                task.add_done_callback(
                    lambda t: link.send(
                        StatusReply(message.ask_id, tuple(t.result()), self._engine.waiting)
                    )
                )
            case Listening():
                link.port = message.port
                listening = self._listening.get(link.index)
                if listening is not None and not listening.done():
                    listening.set_result(message.port)

    def _cancel(self, request: Request) -> None:
        request.future.cancel()
        self._engine.withdraw(request)

    def _submit(self, link: FrontendLink, message: Submit) -> None:
        engine = self._engine
        sequences = [
            Encoded(ids, types)
            for ids, types in zip(message.input_ids, message.token_type_ids, strict=True)
        ]
        try:
            permit = engine.admit(len(sequences))
            request = engine.submit(sequences, message.outputs, message.deadline, permit)
        except PipeserveError as error:
            link.send(Refused(message.request_id, error, engine.waiting))
            return
        link.requests[message.request_id] = request
        request.future.add_done_callback(lambda _: self._answer(link, message.request_id))

    def _answer(self, link: FrontendLink, request_id: int) -> None:
        request = link.requests.pop(request_id, None)
        if request is None or request.future.cancelled():
            return
        error = request.future.exception()
        if error is not None:
            link.send(Refused(request_id, error, self._engine.waiting))
            return
        rows = request.future.result()
        token_level = self._engine.model.token_level
        outputs = {
            name: share(stack_rows([r[name] for r in rows], name in token_level))
            for name in request.outputs
        }
        link.send(
            Answered(
                request_id, outputs, request.queue_ms, request.forward_ms, self._engine.waiting
            )
        )
