"""ModelInfoResponse and ListModels' ServedModel rendered from the protocol-free description
of a served model (`requests/describe.py`)."""

from pipeserve.server.requests.describe import EmbeddingDescription, ModelDescription
from pipeserve.server.settings import Backend, DType, Quantize, Task
from pipeserve.v1 import pipeserve_pb2 as pb

# The .proto's enums spell the settings' members (TASK_FILL_MASK for Task.FILL_MASK).
TASK = {task: pb.Task.Value(f"TASK_{task.name}") for task in Task if task is not Task.AUTO}
_COMPUTE_DTYPE = {dtype: pb.ComputeDType.Value(f"COMPUTE_DTYPE_{dtype.name}") for dtype in DType}
_BACKEND = {b: pb.Backend.Value(f"BACKEND_{b.name}") for b in Backend if b is not Backend.AUTO}
# The same --quantize int8 is dynamic on torch, weights only on openvino.
_QUANTIZATION = {
    (Backend.TORCH, Quantize.NONE): pb.QUANTIZATION_NONE,
    (Backend.TORCH, Quantize.INT8): pb.QUANTIZATION_INT8,
    (Backend.OPENVINO, Quantize.NONE): pb.QUANTIZATION_NONE,
    (Backend.OPENVINO, Quantize.INT8): pb.QUANTIZATION_INT8_WEIGHTS,
    (Backend.OPENVINO, Quantize.INT8_STATIC): pb.QUANTIZATION_INT8_STATIC,
}


def model_info(described: ModelDescription) -> pb.ModelInfoResponse:
    return pb.ModelInfoResponse(
        model=described.model,
        name=described.name,
        task_type=TASK[described.task],
        architecture=described.architecture,
        labels=described.labels,
        max_length=described.max_length,
        hidden_size=described.hidden_size,
        vocab_size=described.vocab_size,
        outputs=described.outputs,
        compute_dtype=_COMPUTE_DTYPE[described.dtype],
        quantization=_QUANTIZATION[described.backend, described.quantize],
        backend_type=_BACKEND[described.backend],
        backend_version=described.backend_version,
        max_items_per_request=described.max_items_per_request,
        max_tokens_per_request=described.max_tokens_per_request,
        max_text_chars=described.max_text_chars,
        max_candidate_labels=described.max_candidate_labels,
        max_targets=described.max_targets,
        max_template_chars=described.max_template_chars,
        max_workers_per_device=described.max_workers_per_device,
        queued_items=described.queued_items,
        workers=[
            pb.WorkerInfo(
                id=w.status.worker_id,
                device=w.status.device,
                pid=w.status.pid,
                ready=w.status.ready,
                batches=w.status.batches,
                items=w.status.items,
                restarts=w.status.restarts,
                busy=w.status.busy,
                shared_with=w.shared_with,
            )
            for w in described.workers
        ],
        frontend_pid=described.frontend_pid,
        frontends=described.frontends,
        served_rpcs=described.served_rpcs,
        mask_token=described.mask_token,
        embedding=_embedding_info(described.embedding),
    )


def _embedding_info(embedding: EmbeddingDescription | None) -> pb.EmbeddingInfo | None:
    if embedding is None:
        return None
    config = embedding.config
    return pb.EmbeddingInfo(
        pooling=config.pooling,
        source=config.source,
        include_prompt=config.include_prompt,
        normalized=config.normalized,
        dimension=embedding.dimension,
        max_seq_length=embedding.max_seq_length,
        prompts=list(config.prompts),
        default_prompt_name=config.default_prompt_name or "",
        truncate_dim=config.truncate_dim or 0,
    )
