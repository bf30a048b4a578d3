"""The server span of each Inference call, with --tracing (`handlers.py` wraps every RPC in it
then; `server/tracing.py` says what the spans under it are).

It follows OpenTelemetry's RPC conventions: named `pipeserve.v1.Inference/Classify`, kind SERVER,
a child of the caller's span as the call's metadata carries it (a W3C traceparent, or what
OTEL_PROPAGATORS names), with rpc.system, rpc.service, rpc.method and rpc.grpc.status_code, and
an error status only for the codes that are the server's fault. Imported only with --tracing:
it imports opentelemetry.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from pipeserve.server.metrics import call_code

# What marks a server span failed, as the conventions list them; the rest are the caller's.
_SERVER_FAULTS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)


class ServerSpans:
    """Wraps the RPCs of service `service` in their server spans."""

    def __init__(self, tracer: Tracer, service: str) -> None:
        self._tracer = tracer
        self._service = service

    @contextmanager
    def _span(self, rpc: str, context: grpc.aio.ServicerContext) -> Iterator[None]:
        """The call's span, current while it runs, so the request path's spans are its
        children."""
        parent = propagate.extract(dict(context.invocation_metadata() or ()))
        attributes = {"rpc.system": "grpc", "rpc.service": self._service, "rpc.method": rpc}
        with self._tracer.start_as_current_span(
            f"{self._service}/{rpc}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            failed = True
            try:
                yield
                failed = False
            finally:
                code = call_code(context, failed)
                span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
                if code in _SERVER_FAULTS:
                    span.set_status(Status(StatusCode.ERROR, code))

    def unary(
        self, rpc: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self._span(rpc, context):
                return await behavior(request, context)

        return unary

    def stream(
        self, rpc: str, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with self._span(rpc, context):
                async for response in behavior(requests, context):
                    yield response

        return stream
