"""The one place that maps errors to gRPC status codes, wrapped around every RPC when the
service is registered (`handlers.py`), so that no handler can forget it. No traceback ever
reaches a client."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from pipeserve.server.errors import (
    DeadlineExceeded,
    InvalidInput,
    LoadFailed,
    ModelBusy,
    ModelExists,
    ModelFailed,
    ModelNotFound,
    Overloaded,
    PipeserveError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedByModel,
)
from pipeserve.wire import RETRY_AFTER_KEY, STATUS_DETAILS_KEY

log = logging.getLogger("pipeserve.status")


_CODES: dict[type[PipeserveError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    UnsupportedByModel: grpc.StatusCode.FAILED_PRECONDITION,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelExists: grpc.StatusCode.ALREADY_EXISTS,
    ModelBusy: grpc.StatusCode.FAILED_PRECONDITION,
    LoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    ModelFailed: grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class CallStatus:
    """How a failed call ends: its code and message, and how long to wait before a retry."""

    code: grpc.StatusCode
    message: str
    retry_after_ms: int | None = None

    def rich(self) -> status_pb2.Status:
        """As google.rpc.Status, the .proto's error model: RetryInfo in details if any."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.retry_after_ms is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(self.retry_after_ms)
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return status

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The google.rpc.Status trailer, and the plain retry-after-ms of v1 clients."""
        metadata: list[tuple[str, str | bytes]] = [
            (STATUS_DETAILS_KEY, self.rich().SerializeToString())
        ]
        if self.retry_after_ms is not None:
            metadata.append((RETRY_AFTER_KEY, str(self.retry_after_ms)))
        return tuple(metadata)


# Longest message sent: messages cut what they repeat of a request (errors.quoted); this is
# the net under them, well within gRPC's metadata limit.
_MAX_MESSAGE_CHARS = 1000


def _fitted(message: str) -> str:
    if len(message) <= _MAX_MESSAGE_CHARS:
        return message
    return message[: _MAX_MESSAGE_CHARS - 20] + " ... (message cut)"


def status_of(error: Exception) -> CallStatus:
    """The status of a call that failed with `error`."""
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            retry_after_ms = error.retry_after_ms if isinstance(error, Overloaded) else None
            return CallStatus(code, _fitted(str(error)), retry_after_ms)
    log.exception("unexpected error while serving a call", exc_info=error)
    return CallStatus(grpc.StatusCode.INTERNAL, "internal server error (details in the server log)")


async def abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Ends the call with the status `error` maps to."""
    if context.done():  # the call already ended (deadline, cancelled): nobody to tell
        return
    status = status_of(error)
    await context.abort(status.code, status.message, status.trailing_metadata())


class _Undecodable:
    """Stands for request bytes that are not a valid message (bad wire data, invalid UTF-8
    in a string field), so the handler can answer INVALID_ARGUMENT instead of gRPC's INTERNAL."""


_UNDECODABLE = _Undecodable()
_UNDECODABLE_ERROR = "request is not a valid protobuf message of this RPC's type (or not UTF-8)"


def tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserializer`, answering bytes it cannot decode with a marker instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:
            return _UNDECODABLE

    return deserialize


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _UNDECODABLE:
            raise InvalidInput(_UNDECODABLE_ERROR)
        yield request


def map_unary_errors(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if request is _UNDECODABLE:
                raise InvalidInput(_UNDECODABLE_ERROR)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return unary


def map_stream_errors(
    behavior: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    async def stream(
        request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for response in behavior(_decoded(request_iterator), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return stream
