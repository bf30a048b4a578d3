"""gRPC server reflection under both names clients ask for: grpc.reflection.v1 (grpcurl,
Postman and current gRPC tools) and grpc.reflection.v1alpha (older ones).

grpcio-reflection serves only v1alpha; v1 is the same protocol under a new package name, its
messages field for field those of v1alpha, so v1alpha's servicer answers both, each under its
own method path."""

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)


def enable_reflection(server: grpc.aio.Server, services: tuple[str, ...]) -> None:
    """Serves reflection of `services` (and of reflection itself) under both names."""
    servicer = reflection.aio.ReflectionServicer((*services, *SERVICE_NAMES))
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
            for name in SERVICE_NAMES
        ]
    )
