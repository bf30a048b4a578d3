"""The one exception the clients raise for a failed call, whatever the transport said."""

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from pipeserve.wire import status_code


class PipeserveError(Exception):
    """A call the server (or the channel) refused: a gRPC status code and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        # Both go to Exception so that the error pickles (multiprocessing, loggers).
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __repr__(self) -> str:
        return f"PipeserveError({self.code.name}, {self.details!r})"


def from_status(code: int, details: str) -> PipeserveError:
    """Makes the error for a status code number, as ClassifyStream reports per request."""
    return PipeserveError(status_code(code), details)


def from_rpc_error(error: grpc.RpcError) -> PipeserveError:
    """Translates a grpc.RpcError (sync) or grpc.aio.AioRpcError into a PipeserveError."""
    # A bare RpcError (from an interceptor, say) need not be a grpc.Call.
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    return PipeserveError(code or grpc.StatusCode.UNKNOWN, details or str(error))


@contextmanager
def translating_rpc_errors() -> Iterator[None]:
    """Raises PipeserveError in place of any gRPC error in the block; works around `await` too."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error
