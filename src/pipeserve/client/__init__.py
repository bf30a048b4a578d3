"""Thin pipeserve client: grpcio, protobuf and numpy only."""

from pipeserve.client import tasks
from pipeserve.client.admin import AdminClient, AsyncAdminClient
from pipeserve.client.aio import AsyncClient
from pipeserve.client.client import Client
from pipeserve.client.errors import PipeserveError
from pipeserve.client.results import (
    EmbeddingInfo,
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    StreamResult,
    Windowed,
    WorkerInfo,
)
from pipeserve.client.security import tls_credentials
from pipeserve.client.tasks import *  # noqa: F403 (the task RPCs' result types, as tasks/ lists them)

__all__ = [
    "AdminClient",
    "AsyncAdminClient",
    "AsyncClient",
    "Client",
    "EmbeddingInfo",
    "Encoding",
    "ForwardOutput",
    "LabelScore",
    "ModelInfo",
    "PipeserveError",
    "StreamResult",
    "Windowed",
    "WorkerInfo",
    "tls_credentials",
    *tasks.__all__,
]
