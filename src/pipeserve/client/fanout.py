"""Making one call of a client: its request sent whole, or, when it exceeds the server's limits,
in parts sent a few at a time, whose answers join into the call's one answer in input order.

The limits are the model's ModelInfo, asked once per client and model (by the first call with
more than one item) and kept. A part that fails fails the call with its error, and the parts
still in flight are cancelled. The call's timeout bounds the whole call, every part included.
When ModelInfo itself fails (a model not served, a wrong token), the request goes whole, and
the server's answer to it says what is wrong.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from pipeserve.client import parse
from pipeserve.client.bind import Call
from pipeserve.client.errors import PipeserveError, translating_rpc_errors
from pipeserve.client.results import ModelInfo
from pipeserve.client.split import plan
from pipeserve.v1 import pipeserve_pb2 as pb

R = TypeVar("R")
# Parts in flight at once by default: enough to keep a server's batcher fed from one caller,
# few enough to leave its queue to other callers.
DEFAULT_SPLIT_CONCURRENCY = 4


class _Fanout:
    """What the blocking and the asyncio fanouts share: the stub (Inference's, or Admin's), each
    call's options, the models' limits and how many parts go at once (0: requests always go
    whole)."""

    def __init__(
        self,
        stub: Any,
        call_options: Callable[[float | None], dict[str, Any]],
        concurrency: int = DEFAULT_SPLIT_CONCURRENCY,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 0:
            raise ValueError(f"split_concurrency must be 0 or a positive int; got {concurrency!r}")
        self._stub = stub
        self._call_options = call_options
        self._concurrency = concurrency
        self._limits: dict[str, ModelInfo] = {}

    def _needs_limits(self, call: Call) -> bool:
        split = call.split
        return bool(self._concurrency and split and len(getattr(call.request, split.field)) > 1)

    def _parts(self, call: Call, info: ModelInfo | None) -> list[tuple[int, Message]]:
        if info is None or call.split is None:
            return [(0, call.request)]
        return plan(call.request, call.split, info)


class _Deadline:
    """The time left of a call's timeout, for each part's own deadline."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        timeout = options["timeout"]
        self._end = None if timeout is None else time.monotonic() + timeout

    def options(self) -> dict[str, Any]:
        if self._end is None:
            return self._options
        return {**self._options, "timeout": max(0.0, self._end - time.monotonic())}


@contextlib.contextmanager
def _in_part(call: Call, part: tuple[int, Message]) -> Iterator[None]:
    """PipeserveError for a part's failure, saying which of the call's items the part held: the
    server numbers the items of the request it got."""
    assert call.split is not None
    start, request = part
    end = start + len(getattr(request, call.split.field))
    try:
        with translating_rpc_errors():
            yield
    except PipeserveError as error:
        where = f"{call.split.field}[{start}:{end}]"
        raise PipeserveError(
            error.code, f"{error.details} (in the request of this call's {where})"
        ) from error


class BlockingFanout(_Fanout):
    """Client's calls; parts in flight as gRPC futures."""

    def __call__(self, call: Call[R]) -> R:
        deadline = _Deadline(self._call_options(call.timeout))
        limits = self._info(call, deadline) if self._needs_limits(call) else None
        parts = self._parts(call, limits)
        method = getattr(self._stub, call.rpc)
        if len(parts) == 1:
            with translating_rpc_errors():
                return call.parse(method(parts[0][1], **deadline.options()))
        assert call.split is not None
        futures: list[grpc.Future] = []
        answers: list[tuple[int, R]] = []

        def next_answer() -> None:
            done = len(answers)
            with _in_part(call, parts[done]):
                answers.append((parts[done][0], call.parse(futures[done].result())))

        try:
            for _, request in parts:
                if len(futures) - len(answers) == self._concurrency:
                    next_answer()
                futures.append(method.future(request, **deadline.options()))
            while len(answers) < len(parts):
                next_answer()
        finally:
            for future in futures:
                future.cancel()
        return call.split.join(answers)

    def _info(self, call: Call, deadline: _Deadline) -> ModelInfo | None:
        model = call.request.model
        if model not in self._limits:
            request = pb.ModelInfoRequest(model=model)
            try:
                response = self._stub.ModelInfo(request, **deadline.options())
                self._limits[model] = parse.model_info(response)
            except grpc.RpcError:
                return None
        return self._limits[model]


class AsyncFanout(_Fanout):
    """AsyncClient's calls; parts in flight as tasks."""

    async def __call__(self, call: Call[R]) -> R:
        deadline = _Deadline(self._call_options(call.timeout))
        limits = await self._info(call, deadline) if self._needs_limits(call) else None
        parts = self._parts(call, limits)
        method = getattr(self._stub, call.rpc)
        if len(parts) == 1:
            with translating_rpc_errors():
                return call.parse(await method(parts[0][1], **deadline.options()))
        assert call.split is not None
        slots = asyncio.Semaphore(self._concurrency)

        async def answer(part: tuple[int, Message]) -> tuple[int, R]:
            async with slots:
                with _in_part(call, part):
                    return part[0], call.parse(await method(part[1], **deadline.options()))

        tasks = [asyncio.ensure_future(answer(part)) for part in parts]
        try:
            answers = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            # Retrieved, so that the failures of parts after the first are not logged.
            await asyncio.gather(*tasks, return_exceptions=True)
        return call.split.join(list(answers))

    async def _info(self, call: Call, deadline: _Deadline) -> ModelInfo | None:
        model = call.request.model
        if model not in self._limits:
            request = pb.ModelInfoRequest(model=model)
            try:
                response = await self._stub.ModelInfo(request, **deadline.options())
                self._limits[model] = parse.model_info(response)
            except grpc.RpcError:
                return None
        return self._limits[model]
