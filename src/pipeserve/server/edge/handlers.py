"""The method handlers of the Inference service (and of the Open Inference Protocol's),
built once at start-up: each RPC of the servicer wrapped with the metrics (outermost, so they
see the final status), with --tracing its server span (`traced.py`), and the error map
(`status.py`), with a deserializer that turns bad bytes into INVALID_ARGUMENT. Wrapping at
registration rather than in interceptors spares every call the interceptor chain and a
handler rebuilt per call."""

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from pipeserve.server import tracing
from pipeserve.server.edge import status
from pipeserve.server.metrics import Metrics
from pipeserve.v1 import pipeserve_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Inference"]

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def register(
    server: grpc.aio.Server,
    servicer: object,
    metrics: Metrics,
    service: ServiceDescriptor = SERVICE,
) -> None:
    """Adds `service` (pipeserve.v1's Inference by default) of `servicer` to `server`, every
    RPC the servicer has wrapped; the service's others answer UNIMPLEMENTED."""
    handlers = {}
    spans = None
    if tracing.active is not None:
        from pipeserve.server.edge.traced import ServerSpans  # it imports opentelemetry

        spans = ServerSpans(tracing.active.tracer, service.full_name)
    for method in service.methods:
        behavior = getattr(servicer, method.name, None)
        if behavior is None:
            continue
        if method.client_streaming:
            mapped = status.map_stream_errors(behavior)
            traced = spans.stream(method.name, mapped) if spans else mapped
            wrapped = metrics.count_stream(method.name, traced)
        else:
            mapped = status.map_unary_errors(behavior)
            traced = spans.unary(method.name, mapped) if spans else mapped
            wrapped = metrics.count_unary(method.name, traced)
        make = _FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            wrapped,
            request_deserializer=status.tolerant(GetMessageClass(method.input_type).FromString),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def with_behavior(
    handler: grpc.RpcMethodHandler,
    behavior: Callable[..., Any],
) -> grpc.RpcMethodHandler:
    """`handler` of the same streaming kind and serializers, doing `behavior` instead."""
    make = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return make(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
