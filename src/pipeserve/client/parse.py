"""Response protos -> the client's results (results.py). Pure: no I/O."""

import numpy as np

from pipeserve.client.errors import PipeserveError, from_status
from pipeserve.client.results import (
    EmbeddingInfo,
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    ServedModel,
    StreamResult,
    Windowed,
    WorkerInfo,
)
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import enum_choices, from_proto

# ModelInfo's enums in the words the server's flags use: "text-classification", "float32",
# "torch"; quantisation as a suffix of the compute dtype, "float32+int8-weights".
_TASKS = {number: name.replace("_", "-") for name, number in enum_choices(pb.Task).items()}
_COMPUTE_DTYPES = {number: name for name, number in enum_choices(pb.ComputeDType).items()}
_QUANTIZATIONS = {
    number: "" if number == pb.QUANTIZATION_NONE else "+" + name.replace("_", "-")
    for name, number in enum_choices(pb.Quantization).items()
}
_BACKENDS = {number: name for name, number in enum_choices(pb.Backend).items()}


def _named(names: dict[int, str], number: int) -> str:
    # A value this client does not know yet (a newer server) is shown, not fatal.
    return names.get(number, f"unknown-{number}")


def encodings(response: pb.TokenizeResponse) -> list[Encoding]:
    """One Encoding per input, in request order."""
    return [
        Encoding(
            input_ids=list(e.input_ids),
            attention_mask=list(e.attention_mask),
            token_type_ids=list(e.token_type_ids),
            tokens=list(e.tokens),
            offsets=[(o.start, o.end) for o in e.offsets],
        )
        for e in response.encodings
    ]


def forward_output(response: pb.ForwardResponse) -> ForwardOutput:
    """The outputs as numpy arrays, in the order asked for."""
    return ForwardOutput(
        ((named.name, from_proto(named.tensor)) for named in response.outputs),
        sequence_lengths=np.array(response.sequence_lengths, dtype=np.int64),
    )


def classifications(response: pb.ClassifyResponse) -> list[Windowed[LabelScore]]:
    """Per input, its labels best first (and the windows it was classified by)."""
    return [
        Windowed(
            (LabelScore(label=s.label, score=s.score, index=s.index) for s in result.labels),
            result.windows,
        )
        for result in response.results
    ]


def stream_error(response: pb.ClassifyStreamResponse) -> PipeserveError | None:
    """The failure of one stream request, None if it succeeded."""
    if response.WhichOneof("outcome") == "status":
        return from_status(response.status.code, response.status.message)
    return None


def stream_result(response: pb.ClassifyStreamResponse) -> StreamResult:
    """A StreamResult holding either the results or the per-request error."""
    error = stream_error(response)
    if error is not None:
        return StreamResult(id=response.id, error=error)
    return StreamResult(id=response.id, results=classifications(response.response))


def model_info(response: pb.ModelInfoResponse) -> ModelInfo:
    """ModelInfoResponse as a dataclass."""
    return ModelInfo(
        model=response.model,
        task=_named(_TASKS, response.task_type),
        architecture=response.architecture,
        labels=list(response.labels),
        max_length=response.max_length,
        hidden_size=response.hidden_size,
        vocab_size=response.vocab_size,
        outputs=list(response.outputs),
        dtype=_named(_COMPUTE_DTYPES, response.compute_dtype)
        + _named(_QUANTIZATIONS, response.quantization),
        max_items_per_request=response.max_items_per_request,
        max_tokens_per_request=response.max_tokens_per_request,
        frontend_pid=response.frontend_pid,
        frontends=response.frontends,
        queued_items=response.queued_items,
        served_rpcs=list(response.served_rpcs),
        mask_token=response.mask_token,
        name=response.name,
        backend=f"{_named(_BACKENDS, response.backend_type)} {response.backend_version}",
        workers=[
            WorkerInfo(
                id=w.id,
                device=w.device,
                pid=w.pid,
                ready=w.ready,
                batches=w.batches,
                items=w.items,
                restarts=w.restarts,
                busy=w.busy,
                shared_with=list(w.shared_with),
            )
            for w in response.workers
        ],
        embedding=_embedding_info(response.embedding) if response.HasField("embedding") else None,
    )


def _embedding_info(info: pb.EmbeddingInfo) -> EmbeddingInfo:
    return EmbeddingInfo(
        pooling=info.pooling,
        source=info.source,
        include_prompt=info.include_prompt,
        normalized=info.normalized,
        dimension=info.dimension,
        max_seq_length=info.max_seq_length,
        prompts=list(info.prompts),
        default_prompt_name=info.default_prompt_name,
        truncate_dim=info.truncate_dim,
    )


def served_models(response: pb.ListModelsResponse) -> list[ServedModel]:
    """ListModelsResponse as dataclasses."""
    return [
        ServedModel(
            name=m.name,
            model=m.model,
            task=_named(_TASKS, m.task_type),
            serving=m.serving,
            default=m.default,
        )
        for m in response.models
    ]
