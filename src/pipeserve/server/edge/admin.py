"""The Admin service: LoadModel and UnloadModel, converted from protos to plain values and
back around the model registry (`engine/registry.py`), which does the work: in this process,
or, with several front ends, in the main one (`frontends/remote.py` carries the calls there).

Registered only with --admin-token-file (else its RPCs answer UNIMPLEMENTED), and every call
needs one of that file's tokens, checked here rather than by the Inference token interceptor
(which lets Admin calls through): an Inference token is not an admin token.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from pipeserve.server.edge import status
from pipeserve.server.edge.security import bearer_accepted
from pipeserve.server.edge.service import InferenceService
from pipeserve.server.errors import Unauthenticated
from pipeserve.v1 import pipeserve_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Admin"]

# LoadModelRequest's string fields that are Settings fields of the same name; empty: unset.
_SETTINGS_FIELDS = ("revision", "task", "devices", "dtype", "quantize", "backend")


class Registry(Protocol):
    """What the Admin service asks of the model registry."""

    async def load(self, name: str, path: str, options: dict[str, Any]) -> None: ...

    async def unload(self, name: str, grace_s: float | None) -> int: ...


class AdminService:
    def __init__(self, registry: Registry, inference: InferenceService) -> None:
        self._registry = registry
        # Describes the loaded model exactly as ModelInfo does.
        self._inference = inference

    async def LoadModel(self, request: pb.LoadModelRequest, context) -> pb.LoadModelResponse:
        options: dict[str, Any] = {
            field: getattr(request, field) for field in _SETTINGS_FIELDS if getattr(request, field)
        }
        if request.HasField("workers_per_device"):
            options["workers_per_device"] = request.workers_per_device
        await self._registry.load(request.name, request.path, options)
        info = await self._inference.ModelInfo(pb.ModelInfoRequest(model=request.name), context)
        return pb.LoadModelResponse(info=info)

    async def UnloadModel(self, request: pb.UnloadModelRequest, context) -> pb.UnloadModelResponse:
        grace_s = request.grace_s if request.HasField("grace_s") else None
        cut = await self._registry.unload(request.name, grace_s)
        return pb.UnloadModelResponse(name=request.name, calls_cut=cut)


def _guarded(
    behavior: Callable[..., Awaitable[Any]], tokens: list[bytes]
) -> Callable[..., Awaitable[Any]]:
    """`behavior` for callers bearing an admin token; the others get UNAUTHENTICATED before
    anything of their request is looked at."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not bearer_accepted(context.invocation_metadata(), tokens):
            refused = Unauthenticated("missing or invalid admin bearer token (--admin-token-file)")
            await status.abort(context, refused)
        return await behavior(request, context)

    return unary


def register(server: grpc.aio.Server, servicer: AdminService, tokens: list[bytes]) -> None:
    """Adds the Admin service of `servicer` to `server`, every RPC guarded and error-mapped."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _guarded(status.map_unary_errors(getattr(servicer, method.name)), tokens),
            request_deserializer=status.tolerant(getattr(pb, method.input_type.name).FromString),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
