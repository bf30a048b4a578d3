"""Thin pipeserve client: grpcio, protobuf and numpy only."""

from pipeserve.client.aio import AsyncClient
from pipeserve.client.client import Client
from pipeserve.client.errors import PipeserveError
from pipeserve.client.results import (
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    StreamResult,
    WorkerInfo,
)
from pipeserve.client.security import tls_credentials

__all__ = [
    "AsyncClient",
    "Client",
    "Encoding",
    "ForwardOutput",
    "LabelScore",
    "ModelInfo",
    "PipeserveError",
    "StreamResult",
    "WorkerInfo",
    "tls_credentials",
]
