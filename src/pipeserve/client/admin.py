"""Clients of the Admin service (a server started with --admin-token-file): load a model
while the server serves the others, and unload one.

`token` is an admin token, one line of the server's --admin-token-file (an inference token is
refused with UNAUTHENTICATED). Calls go to one server: with several replicas, load a model on
each of them.
"""

from collections.abc import Sequence

import grpc

from pipeserve.client import bind, parse
from pipeserve.client.channel import AsyncChannelOwner, CallDefaults, ChannelOwner, Endpoint
from pipeserve.client.fanout import AsyncFanout, BlockingFanout
from pipeserve.client.results import ModelInfo
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import AdminStub


def load_model(
    name: str,
    path: str,
    *,
    revision: str | None = None,
    task: str | None = None,
    devices: str | None = None,
    workers_per_device: int | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
    backend: str | None = None,
    timeout: float | None = None,
) -> bind.Call[ModelInfo]:
    """Loads `path` (a folder on the server, or a hub id) as model `name`, and returns its
    ModelInfo once its workers are ready and it serves calls. The settings are those of a
    models-file entry; None leaves one to the server's own value."""
    request = pb.LoadModelRequest(
        name=name,
        path=str(path),
        revision=revision or "",
        task=task or "",
        devices=devices or "",
        dtype=dtype or "",
        quantize=quantize or "",
        backend=backend or "",
    )
    if workers_per_device is not None:
        request.workers_per_device = workers_per_device
    return bind.Call("LoadModel", request, _loaded, timeout)


def _loaded(response: pb.LoadModelResponse) -> ModelInfo:
    return parse.model_info(response.info)


def unload_model(
    name: str, *, grace_s: float | None = None, timeout: float | None = None
) -> bind.Call[int]:
    """Unloads model `name` once its calls have finished (for up to `grace_s`, default the
    server's --shutdown-grace-s) and its workers stopped; returns how many calls the grace
    cut."""
    request = pb.UnloadModelRequest(name=name)
    if grace_s is not None:
        request.grace_s = grace_s
    return bind.Call("UnloadModel", request, lambda response: response.calls_cut, timeout)


class _AdminCalls:
    """What both admin clients hold: the call defaults, and a stub on a blocking or an
    asyncio channel."""

    _asyncio = False

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str | None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = None,
    ) -> None:
        endpoint = Endpoint(target, credentials=credentials, token=token)
        self._call_options = CallDefaults(endpoint, timeout, wait_for_ready=False)
        self._channel = endpoint.aio_channel() if self._asyncio else endpoint.channel()
        self._stub = AdminStub(self._channel)
        # Admin's calls have nothing to split.
        fanout = AsyncFanout if self._asyncio else BlockingFanout
        self._fanout = fanout(self._stub, self._call_options, concurrency=0)


class AdminClient(_AdminCalls, ChannelOwner):
    """A blocking client of a server's Admin service.

    Failures raise PipeserveError: ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT,
    FAILED_PRECONDITION (the model cannot be loaded), UNAUTHENTICATED (no admin token),
    UNIMPLEMENTED (the server has no --admin-token-file). No default deadline: a load takes as
    long as the model does to load.
    """

    load_model = bind.blocking(load_model)
    unload_model = bind.blocking(unload_model)


class AsyncAdminClient(_AdminCalls, AsyncChannelOwner):
    """The asyncio twin of AdminClient (create it inside the running event loop)."""

    _asyncio = True

    load_model = bind.awaitable(load_model)
    unload_model = bind.awaitable(unload_model)
