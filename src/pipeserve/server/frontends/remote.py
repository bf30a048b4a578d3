"""A front end's view of the engines in the main process (with several front ends,
`--frontends`): each model's `Engine` calls (`engine/core.py`), and the registry's Admin calls,
answered over the front end's one pipe.

Requests keep their futures here, keyed by id; the engine sends each one's `Outputs` back
once, as it gathered them, large arrays in shared memory. A call whose caller goes away is
cancelled there too. Admission is checked here against what the engine last said was waiting,
so a full queue refuses before tokenizing; the engine checks again when the request reaches it.
"""

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from pipeserve.server.engine.queue import Request, overloaded
from pipeserve.server.errors import Unavailable
from pipeserve.server.pipeline.tokenize import Encoded
from pipeserve.server.schema import (
    AdminLoad,
    AdminReply,
    AdminUnload,
    Answered,
    AskStatus,
    Cancel,
    EngineState,
    FromEngine,
    ModelAdded,
    ModelRemoved,
    Output,
    Refused,
    StatusReply,
    Submit,
    ToEngine,
    Welcome,
    WorkerReady,
    WorkerStatus,
)
from pipeserve.server.workers.shm import take

log = logging.getLogger("pipeserve.frontend")

_GONE = "the engine process is gone; retry shortly"


class _Permit:
    """The engine holds the queue's places; a front end has nothing to release."""

    def release(self) -> None:
        pass


class EngineLink:
    """The front end's end of its pipe: routes answers to requests and asks, states to each
    model's `RemoteEngine`, and passes the rest (models added and removed, Drain...) on to
    `on_message`."""

    def __init__(
        self,
        conn: Connection,
        *,
        on_message: Callable[[FromEngine], None],
        on_alive_change: Callable[[str, int], None],
        on_gone: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._pass_on = on_message
        self._on_alive_change = on_alive_change
        self._on_gone = on_gone
        self._ids = itertools.count(1)
        self._engines: dict[str, RemoteEngine] = {}
        self._requests: dict[int, tuple[Request, RemoteEngine]] = {}
        self._asks: dict[int, asyncio.Future[Any]] = {}

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._on_readable)

    def send(self, message: ToEngine) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as error:
            raise Unavailable(_GONE) from error

    def engine(self, name: str) -> "RemoteEngine":
        return self._engines[name]

    async def ask(self, message_for: Callable[[int], ToEngine]) -> Any:
        """Sends `message_for(id)` and returns the reply bearing that id."""
        ask_id = next(self._ids)
        reply = self._asks[ask_id] = asyncio.get_running_loop().create_future()
        try:
            self.send(message_for(ask_id))
            return await reply
        finally:
            self._asks.pop(ask_id, None)

    def submit(self, engine: "RemoteEngine", message_for: Callable[[int], Submit]) -> Request:
        """Sends a request's Submit; its future gets the Outputs the engine answers."""
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        message = message_for(request_id)
        self.send(message)
        lengths = tuple(len(ids) for ids in message.input_ids)
        request = Request(loop.create_future(), message.outputs, lengths)
        self._requests[request_id] = (request, engine)
        request.future.add_done_callback(lambda _: self._on_done(request_id))
        return request

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
            for engine in self._engines.values():
                engine.update(EngineState(engine.name, 0, None, 0))
            for request, _ in self._requests.values():
                request.fail(Unavailable(_GONE))
            for reply in self._asks.values():
                if not reply.done():
                    reply.set_exception(Unavailable(_GONE))
            self._on_gone()

    def _on_message(self, message: FromEngine) -> None:
        match message:
            case Answered():
                held = self._requests.pop(message.request_id, None)
                sent = message.outputs  # its shared blocks are taken (unlinked) either way
                outputs = replace(sent, arrays={n: take(a) for n, a in sent.arrays.items()})
                if held is None:
                    return
                request, engine = held
                engine.waiting = message.waiting
                request.queue_ms, request.forward_ms = message.queue_ms, message.forward_ms
                if not request.gone:
                    request.future.set_result(outputs)
            case Refused():
                held = self._requests.pop(message.request_id, None)
                if held is not None:
                    held[1].waiting = message.waiting
                    held[0].fail(message.error)
            case EngineState():
                engine = self._engines.get(message.model)
                if engine is not None:
                    engine.update(message)
            case StatusReply() | AdminReply():
                reply = self._asks.get(message.ask_id)
                if reply is not None and not reply.done():
                    reply.set_result(message)
            case Welcome():
                # Their states from now on reach them, while the front end loads their cards.
                for added in message.models:
                    self._add(added)
                self._pass_on(message)
            case ModelAdded():
                self._add(message)
                self._pass_on(message)
            case ModelRemoved():
                # Calls that got its engine keep it; states for it are dropped from now on.
                self._engines.pop(message.name, None)
                self._pass_on(message)
            case _:
                self._pass_on(message)

    def _add(self, added: ModelAdded) -> None:
        settings = added.settings
        name = settings.model_name
        on_alive = self._on_alive_change
        engine = RemoteEngine(self, name, settings.max_queued_items, lambda a: on_alive(name, a))
        engine.update(added.state)
        self._engines[name] = engine


class RemoteEngine:
    """The calls of one model's engine, through the link."""

    def __init__(
        self,
        link: EngineLink,
        name: str,
        max_queued_items: int,
        on_alive_change: Callable[[int], None],
    ) -> None:
        self._link = link
        self.name = name
        self._max_items = max_queued_items
        self._on_alive_change = on_alive_change
        self._alive = 0
        self._model: WorkerReady | None = None
        self.waiting = 0

    def update(self, state: EngineState) -> None:
        self.waiting = state.waiting
        self._model = state.ready or self._model
        if state.alive != self._alive:
            self._alive = state.alive
            self._on_alive_change(state.alive)

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
            raise overloaded(self.waiting, self._max_items)
        return _Permit()

    def submit(
        self,
        sequences: Sequence[Encoded],
        outputs: tuple[Output, ...],
        deadline: float | None,
        permit: _Permit,
        traceparent: str | None = None,
    ) -> Request:
        return self._link.submit(
            self,
            lambda request_id: Submit(
                request_id,
                self.name,
                tuple(s.input_ids for s in sequences),
                tuple(s.token_type_ids for s in sequences),
                outputs,
                deadline,
                traceparent,
            ),
        )

    def withdraw(self, request: Request) -> None:
        """Nothing to do here: the request's done callback sends the engine a Cancel, and the
        engine withdraws it there."""

    async def worker_status(self) -> list[WorkerStatus]:
        reply: StatusReply = await self._link.ask(lambda ask_id: AskStatus(ask_id, self.name))
        self.waiting = reply.waiting
        return list(reply.workers)


class RemoteRegistry:
    """The model registry's Admin calls (`edge/admin.py`), carried to the main process."""

    def __init__(self, link: EngineLink) -> None:
        self._link = link

    async def load(self, name: str, path: str, options: dict[str, Any]) -> None:
        await self._ask(lambda ask_id: AdminLoad(ask_id, name, path, options))

    async def unload(self, name: str, grace_s: float | None) -> int:
        return await self._ask(lambda ask_id: AdminUnload(ask_id, name, grace_s))

    async def _ask(self, message_for: Callable[[int], ToEngine]) -> int:
        reply: AdminReply = await self._link.ask(message_for)
        if reply.error is not None:
            raise reply.error
        return reply.calls_cut
