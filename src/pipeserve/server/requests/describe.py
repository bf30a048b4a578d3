"""What a served model is, in plain terms: its card, the settings it runs with and its
engine's state now. Protocol-free: the gRPC edge renders it as ModelInfoResponse
(`edge/model_info.py`); another protocol (the Open Inference Protocol's model metadata) can
render the same description.
"""

import os
from dataclasses import dataclass

from pipeserve.server.backends.select import backend_version
from pipeserve.server.model.served import served_rpcs
from pipeserve.server.pipeline.embed import SentenceConfig
from pipeserve.server.requests.models import ServedModel
from pipeserve.server.schema import WorkerStatus
from pipeserve.server.settings import Backend, DType, Quantize, Task


@dataclass(frozen=True)
class EmbeddingDescription:
    """How Embed pools and normalises: the checkpoint's sentence-transformers setup, the
    embedding's dimension (before truncate_dim) and Embed's default token limit."""

    config: SentenceConfig
    dimension: int
    max_seq_length: int


@dataclass(frozen=True)
class WorkerDescription:
    """A worker slot now, and the workers of other models on its device ("MODEL/ID")."""

    status: WorkerStatus
    shared_with: tuple[str, ...]


@dataclass(frozen=True)
class ModelDescription:
    """A served model, the limits in force and its workers."""

    name: str
    # Path or hub id as given to the server.
    model: str
    task: Task
    architecture: str
    labels: tuple[str, ...]
    max_length: int
    hidden_size: int
    vocab_size: int
    outputs: tuple[str, ...]
    dtype: DType
    quantize: Quantize
    # Resolved at start-up (never auto); its version cannot change while serving.
    backend: Backend
    backend_version: str
    max_items_per_request: int
    max_tokens_per_request: int
    max_text_chars: int
    max_candidate_labels: int
    max_targets: int
    max_template_chars: int
    max_workers_per_device: int
    queued_items: int
    workers: tuple[WorkerDescription, ...]
    # The process id of the front end describing it (several may serve one port).
    frontend_pid: int
    frontends: int
    served_rpcs: tuple[str, ...]
    mask_token: str
    # A bare encoder's (None for other heads).
    embedding: EmbeddingDescription | None


async def describe(served: ServedModel) -> ModelDescription:
    """`served` as it is now; asks a remote engine for its workers' state."""
    card, engine, settings = served.card, served.engine, served.settings
    workers = await engine.worker_status()  # refreshes `waiting` from a remote engine
    return ModelDescription(
        name=served.name,
        model=card.name,
        task=card.task,
        architecture=engine.model.model_class,
        labels=tuple(card.labels),
        max_length=card.max_length,
        hidden_size=card.hidden_size,
        vocab_size=card.vocab_size,
        outputs=tuple(engine.model.outputs),
        dtype=settings.dtype,
        quantize=settings.quantize,
        backend=settings.backend,
        backend_version=backend_version(settings.backend),
        max_items_per_request=settings.max_items_per_request,
        max_tokens_per_request=settings.max_tokens_per_request,
        max_text_chars=settings.max_text_chars,
        max_candidate_labels=settings.max_candidate_labels,
        max_targets=settings.max_targets,
        max_template_chars=settings.max_template_chars,
        max_workers_per_device=settings.workers_per_device_limit,
        queued_items=engine.waiting,
        workers=tuple(
            WorkerDescription(w, served.shared_with.get(w.worker_id, ())) for w in workers
        ),
        frontend_pid=os.getpid(),
        frontends=settings.frontends,
        served_rpcs=tuple(served_rpcs(card)),
        mask_token=card.tokenizer.mask_token,
        embedding=_embedding(served),
    )


def _embedding(served: ServedModel) -> EmbeddingDescription | None:
    config = served.embedder.config
    if config is None:
        return None
    return EmbeddingDescription(config, served.card.hidden_size, served.embedder.max_seq_length)
