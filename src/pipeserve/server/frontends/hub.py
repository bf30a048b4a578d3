"""The engines' end of the front ends' pipes (with several front ends, `--frontends`).

Every front end's requests for a model go into that model's one queue, so a batch can hold
items of several front ends. Each request's outputs go back to its own front end as the engine
gathered them, large arrays in shared memory. A front end that dies takes its requests with
it: they are cancelled here, so their items are never computed.

The hub is a listener of the model registry: a model added or removed is announced to every
front end, and the registry's call returns once each has answered (a front end that dies
meanwhile answers nothing; its respawn learns the models served then, when it attaches). The
Admin calls a front end receives come here and go to the registry.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection

from pipeserve.server.engine.core import Engine
from pipeserve.server.engine.queue import Request
from pipeserve.server.engine.registry import ModelRegistry, RunningModel, SharedTables
from pipeserve.server.errors import PipeserveError
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
    FrontendsListening,
    Listening,
    ModelAdded,
    ModelGone,
    ModelRemoved,
    ModelServed,
    Refused,
    SharedDevices,
    StatusReply,
    Submit,
    ToEngine,
    Welcome,
)
from pipeserve.server.workers.shm import share

log = logging.getLogger("pipeserve.hub")


@dataclass(eq=False)
class FrontendLink:
    index: int
    conn: Connection
    requests: dict[int, tuple[Request, Engine]] = field(default_factory=dict)
    # The announcements it has yet to answer, by (answer type, model name).
    awaited: dict[tuple[type, str], asyncio.Future[None]] = field(default_factory=dict)
    # Set by its Listening message; the front end serves once this is set.
    port: int | None = None

    def send(self, message: FromEngine) -> None:
        # Once gone, its reader sees EOF and cancels its requests.
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(message)

    def answered(self, kind: type, name: str) -> None:
        awaited = self.awaited.pop((kind, name), None)
        if awaited is not None and not awaited.done():
            awaited.set_result(None)


class Hub:
    def __init__(self, registry: ModelRegistry, frontends: int) -> None:
        self._registry = registry
        self._count = frontends
        self._links: dict[int, FrontendLink] = {}
        self._listening: dict[int, asyncio.Future[int]] = {}
        self._tables: SharedTables = {}
        self._every_listening = False
        # Admin calls run to the end even if their front end dies meanwhile.
        self._admin: set[asyncio.Task] = set()

    def attach(self, index: int, conn: Connection) -> asyncio.Future[int]:
        """Serves a front end's pipe; the future gets the port it listens on."""
        loop = asyncio.get_running_loop()
        link = FrontendLink(index, conn)
        self._links[index] = link
        listening = self._listening[index] = loop.create_future()
        loop.add_reader(conn.fileno(), self._on_readable, link)
        models = tuple(self._added(m) for m in self._registry.served)
        link.send(Welcome(models, self._tables, self._registry.loading))
        return listening

    # The registry's listener calls.

    async def model_added(self, model: RunningModel) -> None:
        await self._announce(self._added(model), ModelServed, model.name)

    async def model_removed(self, name: str) -> None:
        await self._announce(ModelRemoved(name), ModelGone, name)

    def model_alive(self, name: str, alive: int) -> None:
        try:
            state = self._state(name, self._registry.running(name))
        except PipeserveError:  # still loading: its ModelAdded carries its state
            return
        for link in self._links.values():
            link.send(state)

    def devices_shared(self, tables: SharedTables) -> None:
        self._tables = tables
        for link in self._links.values():
            link.send(SharedDevices(tables))

    def _added(self, model: RunningModel) -> ModelAdded:
        return ModelAdded(model.settings, self._state(model.name, model.engine))

    async def _announce(self, message: FromEngine, answer: type, name: str) -> None:
        """Sends `message` to every front end; returns once each answered `answer`."""
        loop = asyncio.get_running_loop()
        awaited = []
        for link in self._links.values():
            future = link.awaited[(answer, name)] = loop.create_future()
            awaited.append(future)
            link.send(message)
        await asyncio.gather(*awaited)

    @staticmethod
    def _state(name: str, engine: Engine) -> EngineState:
        ready = engine.model if engine.alive else None
        return EngineState(name, engine.alive, ready, engine.waiting)

    def _set_every_listening(self) -> None:
        every = len(self._links) == self._count and all(
            link.port is not None for link in self._links.values()
        )
        if every != self._every_listening:
            self._every_listening = every
            for link in self._links.values():
                link.send(FrontendsListening(every))

    # What the front ends send.

    def _on_readable(self, link: FrontendLink) -> None:
        try:  # one message a call, as the supervisor reads its workers
            self._on_message(link, link.conn.recv())
        except (EOFError, OSError):
            self._on_gone(link)

    def _on_gone(self, link: FrontendLink) -> None:
        asyncio.get_running_loop().remove_reader(link.conn.fileno())
        if self._links.get(link.index) is link:
            del self._links[link.index]
        for request, engine in link.requests.values():
            self._cancel(request, engine)
        for awaited in link.awaited.values():
            if not awaited.done():
                awaited.set_result(None)
        listening = self._listening.pop(link.index, None)
        if listening is not None and not listening.done():
            listening.set_exception(EOFError(f"front end {link.index} exited"))
        self._set_every_listening()

    def _on_message(self, link: FrontendLink, message: ToEngine) -> None:
        match message:
            case Submit():
                self._submit(link, message)
            case Cancel():
                held = link.requests.pop(message.request_id, None)
                if held is not None:
                    self._cancel(*held)
            case AskStatus():
                self._status(link, message)
            case Listening():
                link.port = message.port
                listening = self._listening.get(link.index)
                if listening is not None and not listening.done():
                    listening.set_result(message.port)
                self._set_every_listening()
            case ModelServed() | ModelGone():
                link.answered(type(message), message.name)
            case AdminLoad():
                self._admin_call(link, message.ask_id, self._load(message))
            case AdminUnload():
                unload = self._registry.unload(message.name, message.grace_s)
                self._admin_call(link, message.ask_id, unload)

    async def _load(self, message: AdminLoad) -> int:
        await self._registry.load(message.name, message.path, message.options)
        return 0  # a load cuts no calls

    def _admin_call(self, link: FrontendLink, ask_id: int, call: Awaitable[int]) -> None:
        """Runs `call` (returning the calls it cut) and answers the front end."""

        async def run() -> None:
            try:
                reply = AdminReply(ask_id, None, await call)
            except PipeserveError as error:
                reply = AdminReply(ask_id, error)
            except Exception as error:  # the front end answers INTERNAL; the details are here
                log.exception("admin call failed", exc_info=error)
                reply = AdminReply(ask_id, RuntimeError("admin call failed in the engine process"))
            link.send(reply)

        task = asyncio.get_running_loop().create_task(run())
        self._admin.add(task)
        task.add_done_callback(self._admin.discard)

    def _status(self, link: FrontendLink, message: AskStatus) -> None:
        try:
            engine = self._registry.running(message.model)
        except PipeserveError:  # unloaded since: no workers to show
            link.send(StatusReply(message.ask_id, (), 0))
            return
        task = asyncio.get_running_loop().create_task(engine.worker_status())
        task.add_done_callback(
            lambda t: link.send(StatusReply(message.ask_id, tuple(t.result()), engine.waiting))
        )

    @staticmethod
    def _cancel(request: Request, engine: Engine) -> None:
        request.future.cancel()
        engine.withdraw(request)

    def _submit(self, link: FrontendLink, message: Submit) -> None:
        sequences = [
            Encoded(ids, types)
            for ids, types in zip(message.input_ids, message.token_type_ids, strict=True)
        ]
        waiting = 0
        try:
            engine = self._registry.running(message.model)
            waiting = engine.waiting
            permit = engine.admit(len(sequences))
            request = engine.submit(
                sequences, message.outputs, message.deadline, permit, message.traceparent
            )
        except PipeserveError as error:
            link.send(Refused(message.request_id, error, waiting))
            return
        link.requests[message.request_id] = (request, engine)
        request.future.add_done_callback(lambda _: self._answer(link, message.request_id))

    def _answer(self, link: FrontendLink, request_id: int) -> None:
        held = link.requests.pop(request_id, None)
        if held is None or held[0].future.cancelled():
            return
        request, engine = held
        error = request.future.exception()
        if error is not None:
            link.send(Refused(request_id, error, engine.waiting))
            return
        result = request.future.result()
        outputs = replace(result, arrays={n: share(a) for n, a in result.arrays.items()})
        link.send(
            Answered(request_id, outputs, request.queue_ms, request.forward_ms, engine.waiting)
        )
