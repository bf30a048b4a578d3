"""Thin pipeserve client: grpcio, protobuf and numpy only."""

from pipeserve.client.aio import AsyncClient
from pipeserve.client.client import Client
from pipeserve.client.convert import (
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    StreamResult,
    WorkerInfo,
)
from pipeserve.client.errors import PipeserveError

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
]
