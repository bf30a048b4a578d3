"""Thin pipeserve client: grpcio, protobuf and numpy only."""

from pipeserve.client.admin import AdminClient, AsyncAdminClient
from pipeserve.client.aio import AsyncClient
from pipeserve.client.client import Client
from pipeserve.client.errors import PipeserveError
from pipeserve.client.results import (
    EmbeddingInfo,
    Encoding,
    Entity,
    ForwardOutput,
    LabelScore,
    MaskCandidate,
    MaskFill,
    ModelInfo,
    RankedDocument,
    StreamResult,
    Windowed,
    WorkerInfo,
)
from pipeserve.client.security import tls_credentials

__all__ = [
    "AdminClient",
    "AsyncAdminClient",
    "AsyncClient",
    "Client",
    "EmbeddingInfo",
    "Encoding",
    "Entity",
    "ForwardOutput",
    "LabelScore",
    "MaskCandidate",
    "MaskFill",
    "ModelInfo",
    "PipeserveError",
    "RankedDocument",
    "StreamResult",
    "Windowed",
    "WorkerInfo",
    "tls_credentials",
]
