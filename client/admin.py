"""Clients of the Admin service (a server started with --admin-token-file): load a model
while the server serves the others, and unload one.

`token` is an admin token, one line of the server's --admin-token-file (an inference token is
refused with UNAUTHENTICATED). Calls go to one server: with several replicas, load a model on
each of them.
"""

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import grpc

from pipeserve.client import parse
from pipeserve.client.channel import CallDefaults, Endpoint
from pipeserve.client.errors import translating_rpc_errors
from pipeserve.client.results import ModelInfo
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import AdminStub


def load_request(
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
) -> pb.LoadModelRequest:
    """A LoadModelRequest; None leaves a setting to the server's own value."""
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
    return request


def unload_request(name: str, grace_s: float | None = None) -> pb.UnloadModelRequest:
    request = pb.UnloadModelRequest(name=name)
    if grace_s is not None:
        request.grace_s = grace_s
    return request


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


class AdminClient(_AdminCalls):
    """A blocking client of a server's Admin service.

    `load_model` returns once the model's workers are ready and it serves calls (its
    ModelInfo); `unload_model` once its calls have finished (for up to `grace_s`, default the
    server's --shutdown-grace-s) and its workers stopped, and returns how many calls the grace
    cut. Failures raise PipeserveError: ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT,
    FAILED_PRECONDITION (the model cannot be loaded), UNAUTHENTICATED (no admin token),
    UNIMPLEMENTED (the server has no --admin-token-file). No default deadline: a load takes as
    long as the model does to load.
    """

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def load_model(
        self, name: str, path: str, *, timeout: float | None = None, **settings: Any
    ) -> ModelInfo:
        """Loads `path` (a folder on the server, or a hub id) as model `name`; `settings`
        are load_request's: revision, task, devices, workers_per_device, dtype, quantize,
        backend."""
        request = load_request(name, path, **settings)
        with translating_rpc_errors():
            response = self._stub.LoadModel(request, **self._call_options(timeout))
        return parse.model_info(response.info)

    def unload_model(
        self, name: str, *, grace_s: float | None = None, timeout: float | None = None
    ) -> int:
        """Unloads model `name`; returns how many of its calls were cut by the grace."""
        with translating_rpc_errors():
            response = self._stub.UnloadModel(
                unload_request(name, grace_s), **self._call_options(timeout)
            )
        return response.calls_cut


class AsyncAdminClient(_AdminCalls):
    """The asyncio twin of AdminClient (create it inside the running event loop)."""

    _asyncio = True

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def load_model(
        self,
        name: str,
        path: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the gRPC deadline, as in aio.py)
        **settings: Any,
    ) -> ModelInfo:
        request = load_request(name, path, **settings)
        with translating_rpc_errors():
            response = await self._stub.LoadModel(request, **self._call_options(timeout))
        return parse.model_info(response.info)

    async def unload_model(
        self,
        name: str,
        *,
        grace_s: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> int:
        with translating_rpc_errors():
            response = await self._stub.UnloadModel(
                unload_request(name, grace_s), **self._call_options(timeout)
            )
        return response.calls_cut
