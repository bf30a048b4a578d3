"""gRPC senders: one request of a run per call, or per message of a shared stream."""

import asyncio
import contextlib
import itertools
import math
from collections.abc import Sequence
from typing import TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import Message

from pipeserve.client import build
from pipeserve.client.parse import stream_error
from pipeserve.client.tasks.classify_tokens import classify_tokens_request
from pipeserve.client.tasks.embed import embed_request
from pipeserve.client.tasks.fill_mask import fill_mask_request
from pipeserve.client.tasks.rerank import rerank_request
from pipeserve.client.tasks.zero_shot import classify_zero_shot_request
from pipeserve.loadtest.plan import DEFAULT_QUERY, Outcome, Setup
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from pipeserve.wire import STAGES

Metadata: TypeAlias = tuple[tuple[str, str], ...] | None
# A stream request's status code name, the failure's message and the server's stage times.
Answer: TypeAlias = tuple[str, str, dict[str, float]]
# How long a stream's close may wait for its last answers.
CLOSE_TIMEOUT_S = 10.0


def stage_times(timings: pb.Timings) -> dict[str, float]:
    """The server's per-stage times (ms) of a response, by stage; the stages the call did
    not run (0) left out."""
    times = {stage: getattr(timings, f"{stage}_ms") for stage in STAGES}
    return {stage: ms for stage, ms in times.items() if ms}


def _request(rpc: str, texts: list[str], setup: Setup) -> Message:
    """The request of `rpc` for `texts`, with the setup's model and options."""
    options, model = dict(setup.options), setup.model
    if rpc == "tokenize":
        return build.tokenize_request(texts, model=model)
    if rpc == "forward":
        return build.forward_request(texts, outputs=setup.outputs, model=model)
    if rpc in ("classify", "classify-stream"):
        return build.classify_request(texts, model=model)
    if rpc == "embed":
        return embed_request(texts, model=model)
    if rpc == "rerank":
        return rerank_request(options.pop("query", DEFAULT_QUERY), texts, model=model, **options)
    if rpc == "classify-zero-shot":
        labels = options.pop("candidate_labels")
        return classify_zero_shot_request(texts, labels, model=model, **options)
    if rpc == "classify-tokens":
        return classify_tokens_request(texts, model=model, **options)
    return fill_mask_request(texts, model=model, **options)


# The Inference method of each unary RPC.
_METHODS = {
    "tokenize": "Tokenize",
    "forward": "Forward",
    "classify": "Classify",
    "embed": "Embed",
    "rerank": "Rerank",
    "classify-zero-shot": "ClassifyZeroShot",
    "classify-tokens": "ClassifyTokens",
    "fill-mask": "FillMask",
}


def build_requests(setup: Setup, texts: Sequence[str]) -> list[Message]:
    """The run's distinct requests, built once so that building them is never timed.

    Request r takes the next `items_per_request` texts (Rerank: documents), cycling through
    `texts`, so consecutive requests differ; the sequence repeats after
    len(texts) / gcd(len(texts), items) requests.
    """
    if not texts:
        raise ValueError("no texts to send")
    items_per_request = setup.items_per_request
    period = len(texts) // math.gcd(len(texts), items_per_request)
    requests: list[Message] = []
    for number in range(period):
        first = number * items_per_request
        chunk = [texts[(first + j) % len(texts)] for j in range(items_per_request)]
        requests.append(_request(setup.rpc, chunk, setup))
    return requests


class _UnarySender:
    """A unary RPC: one call per request, stage times from its response."""

    def __init__(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable,
        requests: Sequence[Message],
        items: int,
        seconds: float | None,
        metadata: Metadata,
    ) -> None:
        self._method = method
        self._requests = requests
        self._items = items
        self._seconds = seconds
        self._metadata = metadata

    async def __call__(self, index: int) -> Outcome:
        request = self._requests[index % len(self._requests)]
        try:
            response = await self._method(request, timeout=self._seconds, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code().name, self._items, details=error.details() or "")
        return Outcome("OK", self._items, stage_times(response.timings))

    async def close(self) -> None:
        pass


class _Stream:
    """One ClassifyStream call: writes requests with ids and matches the answers to them."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        # gRPC takes one write at a time per call; concurrent callers take turns.
        self._write_lock = asyncio.Lock()
        self.ended = False
        self._reader = asyncio.create_task(self._read())

    async def ask(
        self, request_id: str, request: pb.ClassifyRequest, seconds: float | None
    ) -> Answer:
        """Sends one request; returns its status code name, for a failure the message, and for
        a success the server's stage times."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            try:
                async with self._write_lock:
                    await self._call.write(pb.ClassifyStreamRequest(id=request_id, request=request))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                # The stream ended under us; its reader settles `answer` with the stream's code.
                await asyncio.gather(self._reader, return_exceptions=True)
                return answer.result() if answer.done() else ("UNKNOWN", "stream write failed", {})
            # The stream has no deadline of its own; --timeout bounds each request instead.
            async with asyncio.timeout(seconds):
                return await answer
        except TimeoutError:
            return "DEADLINE_EXCEEDED", f"no answer on the stream within {seconds:g} s", {}
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        code, details = "UNKNOWN", ""
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:
                answer = self._pending.get(message.id)
                if answer is None or answer.done():
                    continue  # timed out already
                error = stream_error(message)
                if error is not None:
                    answer.set_result((error.code.name, error.details, {}))
                else:
                    answer.set_result(("OK", "", stage_times(message.response.timings)))
            code = (await self._call.code()).name
        except grpc.aio.AioRpcError as error:
            code, details = error.code().name, error.details() or ""
        finally:
            self.ended = True
            # Whatever is still waiting will never be answered on this stream.
            if code == "OK":
                code, details = "UNKNOWN", "the server ended the stream without answering"
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_result((code, details, {}))

    async def close(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.done_writing()
        # Every answer is in by now, so the server ends the stream at once; don't hang if not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reader), CLOSE_TIMEOUT_S)
        self._call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class _StreamSender:
    """ClassifyStream: every request is one message on a shared stream, matched by id. A stream
    that ends (server restart) is reopened by the next request. Each answer carries its own
    stage times."""

    def __init__(
        self,
        stub: InferenceStub,
        requests: Sequence[Message],
        items: int,
        seconds: float | None,
        metadata: Metadata,
    ) -> None:
        self._stub = stub
        self._requests = requests
        self._items = items
        self._seconds = seconds
        self._metadata = metadata
        self._stream: _Stream | None = None
        self._ids = itertools.count()

    async def __call__(self, index: int) -> Outcome:
        if self._stream is None or self._stream.ended:
            self._stream = _Stream(self._stub.ClassifyStream(metadata=self._metadata))
        request = self._requests[index % len(self._requests)]
        assert isinstance(request, pb.ClassifyRequest)
        code, details, stages = await self._stream.ask(str(next(self._ids)), request, self._seconds)
        return Outcome(code, self._items, stages, details)

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()


def make_sender(
    stub: InferenceStub, setup: Setup, requests: Sequence[Message], metadata: Metadata
) -> _UnarySender | _StreamSender:
    """The sender of `setup.rpc`; `metadata` (the bearer token) goes with every call."""
    items, seconds = setup.items_per_request, setup.timeout
    if setup.rpc == "classify-stream":
        return _StreamSender(stub, requests, items, seconds, metadata)
    method = getattr(stub, _METHODS[setup.rpc])
    return _UnarySender(method, requests, items, seconds, metadata)
