"""The one place that maps errors to gRPC status codes, wrapped around every RPC when the
service is registered (`handlers.py`), so that no handler can forget it. No traceback ever
reaches a client."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from pipeserve.server.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailed,
    Overloaded,
    PipeserveError,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedByModel,
)

log = logging.getLogger("pipeserve.status")

RETRY_AFTER_KEY = "retry-after-ms"

_CODES: dict[type[PipeserveError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    UnsupportedByModel: grpc.StatusCode.FAILED_PRECONDITION,
    ModelFailed: grpc.StatusCode.INTERNAL,
}


def status_of(error: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """(code, message, trailing metadata) for an error raised while serving a call."""
    for kind, code in _CODES.items():
        if isinstance(error, kind):
            metadata: tuple[tuple[str, str], ...] = ()
            if isinstance(error, Overloaded):
                metadata = ((RETRY_AFTER_KEY, str(error.retry_after_ms)),)
            return code, str(error), metadata
    log.exception("unexpected error while serving a call", exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal server error (details in the server log)", ()


async def abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    """Ends the call with the status `error` maps to."""
    if context.done():  # the call already ended (deadline, cancelled): nobody to tell
        return
    code, message, metadata = status_of(error)
    await context.abort(code, message, metadata)


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
