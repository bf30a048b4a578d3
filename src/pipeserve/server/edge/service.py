"""The gRPC servicer: converts protos to plain inputs, calls `Infer`, converts back. The task
RPCs' methods are in service_tasks.py, the conversions both use in convert.py.

No logic of its own beyond the wire format; errors are mapped by `status.py` and calls
counted by `metrics.py`, both wrapped around each method by `handlers.py`.
"""

import asyncio
import os
from collections.abc import AsyncIterator

import numpy as np

from pipeserve.server.backends.select import backend_label
from pipeserve.server.edge.convert import (
    FLOAT_DTYPE,
    call_deadline,
    enum_value,
    labels_proto,
    text_options,
    timing_metadata,
)
from pipeserve.server.edge.service_tasks import TaskServicer
from pipeserve.server.edge.status import status_of
from pipeserve.server.errors import InvalidInput
from pipeserve.server.model.served import served_rpcs
from pipeserve.server.pipeline.classify import ScoreFunction
from pipeserve.server.pipeline.inputs import (
    EncodeFlags,
    ModelInput,
    TextInput,
    TokenIds,
)
from pipeserve.server.pipeline.windows import WindowAggregation
from pipeserve.server.requests.infer import Timings
from pipeserve.server.requests.models import Models, ServedModel
from pipeserve.server.schema import WorkerStatus
from pipeserve.server.settings import Backend, DType, Quantize, Task, precision_label
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from pipeserve.wire import to_proto

_FUNCTION = {
    pb.FUNCTION_TO_APPLY_UNSPECIFIED: None,
    pb.FUNCTION_TO_APPLY_SOFTMAX: ScoreFunction.SOFTMAX,
    pb.FUNCTION_TO_APPLY_SIGMOID: ScoreFunction.SIGMOID,
    pb.FUNCTION_TO_APPLY_NONE: ScoreFunction.NONE,
}
_WINDOW_AGGREGATION = {
    pb.WINDOW_AGGREGATION_UNSPECIFIED: WindowAggregation.MEAN,
    pb.WINDOW_AGGREGATION_MEAN: WindowAggregation.MEAN,
    pb.WINDOW_AGGREGATION_MAX: WindowAggregation.MAX,
}
_TASK = {
    Task.FEATURE_EXTRACTION: pb.TASK_FEATURE_EXTRACTION,
    Task.TEXT_CLASSIFICATION: pb.TASK_TEXT_CLASSIFICATION,
    Task.TOKEN_CLASSIFICATION: pb.TASK_TOKEN_CLASSIFICATION,
    Task.QUESTION_ANSWERING: pb.TASK_QUESTION_ANSWERING,
    Task.FILL_MASK: pb.TASK_FILL_MASK,
}
_COMPUTE_DTYPE = {
    DType.FLOAT32: pb.COMPUTE_DTYPE_FLOAT32,
    DType.BFLOAT16: pb.COMPUTE_DTYPE_BFLOAT16,
    DType.FLOAT16: pb.COMPUTE_DTYPE_FLOAT16,
}
_QUANTIZATION = {
    (Backend.TORCH, Quantize.NONE): pb.QUANTIZATION_NONE,
    (Backend.TORCH, Quantize.INT8): pb.QUANTIZATION_INT8,
    (Backend.OPENVINO, Quantize.NONE): pb.QUANTIZATION_NONE,
    (Backend.OPENVINO, Quantize.INT8): pb.QUANTIZATION_INT8_WEIGHTS,
    (Backend.OPENVINO, Quantize.INT8_STATIC): pb.QUANTIZATION_INT8_STATIC,
}
_BACKEND = {Backend.TORCH: pb.BACKEND_TORCH, Backend.OPENVINO: pb.BACKEND_OPENVINO}


def _text_input(index: int, item: pb.TextInput | pb.ModelInput) -> TextInput:
    kind = item.WhichOneof("kind")
    if kind == "text":
        return item.text
    if kind == "pair":
        return (item.pair.text, item.pair.text_pair)
    raise InvalidInput(f"inputs[{index}] is empty: set text, pair or ids")


def _model_input(index: int, item: pb.ModelInput) -> ModelInput:
    if item.WhichOneof("kind") == "ids":
        types = item.ids.token_type_ids
        return TokenIds(
            np.asarray(item.ids.input_ids, dtype=np.int64),
            np.asarray(types, dtype=np.int64) if len(types) else None,
        )
    return _text_input(index, item)


class InferenceService(TaskServicer, pb_grpc.InferenceServicer):
    def __init__(self, models: Models) -> None:
        self._models = models

    def _model(self, request) -> ServedModel:
        """The served model a request's `model` field names (NOT_FOUND when none is)."""
        return self._models.get(request.model)

    async def Tokenize(self, request: pb.TokenizeRequest, context) -> pb.TokenizeResponse:
        infer = self._model(request).infer
        items = [_text_input(i, item) for i, item in enumerate(request.inputs)]
        flags = EncodeFlags(
            attention_mask=(
                request.return_attention_mask if request.HasField("return_attention_mask") else True
            ),
            token_type_ids=(
                request.return_token_type_ids if request.HasField("return_token_type_ids") else None
            ),
            tokens=request.return_tokens,
            offsets=request.return_offsets,
        )
        padded = await infer.tokenize(items, text_options(request.options), flags)
        want_types = flags.token_type_ids
        if want_types is None:
            want_types = infer.card.tokenizer.uses_token_type_ids
        encodings = []
        for row, ids in enumerate(padded.input_ids):
            encoding = pb.Encoding(input_ids=ids)
            if flags.attention_mask:
                encoding.attention_mask.extend(padded.attention_mask[row])
            if want_types:
                types = padded.token_type_ids[row] if padded.token_type_ids else [0] * len(ids)
                encoding.token_type_ids.extend(types)
            if padded.tokens is not None:
                encoding.tokens.extend(padded.tokens[row])
            if padded.offsets is not None:
                encoding.offsets.extend(pb.Offset(start=s, end=e) for s, e in padded.offsets[row])
            encodings.append(encoding)
        return pb.TokenizeResponse(encodings=encodings)

    async def Forward(self, request: pb.ForwardRequest, context) -> pb.ForwardResponse:
        infer = self._model(request).infer
        items = [_model_input(i, item) for i, item in enumerate(request.inputs)]
        dtype = enum_value(FLOAT_DTYPE, request.output_dtype, "output_dtype")
        result = await infer.forward(
            items,
            list(request.outputs),
            text_options(request.options),
            call_deadline(context),
            itemsize=np.dtype(dtype).itemsize,
        )
        context.set_trailing_metadata(timing_metadata(result.timings))
        return pb.ForwardResponse(
            outputs=[
                pb.NamedTensor(name=name, tensor=to_proto(array.astype(dtype, copy=False)))
                for name, array in result.outputs.items()
            ],
            sequence_lengths=result.sequence_lengths.tolist(),
        )

    async def _classify(
        self, request: pb.ClassifyRequest, deadline: float | None
    ) -> tuple[pb.ClassifyResponse, Timings]:
        model = self._model(request)
        items = [_model_input(i, item) for i, item in enumerate(request.inputs)]
        function = enum_value(_FUNCTION, request.function_to_apply, "function_to_apply")
        if request.top_k < -1:
            raise InvalidInput(
                f"top_k must be -1 (all), 0 (default 1) or positive; got {request.top_k}"
            )
        every = request.all_labels or request.top_k == -1
        top_k = None if every else (request.top_k or 1)
        options = text_options(request.options)
        if request.HasField("stride"):
            aggregation = enum_value(
                _WINDOW_AGGREGATION, request.window_aggregation, "window_aggregation"
            )
            result = await model.classify.classify_windows(
                items, function, top_k, request.stride, aggregation, options, deadline
            )
        else:
            result = await model.classify.classify(items, function, top_k, options, deadline)
        return labels_proto(result.labels, result.windows), result.timings

    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:
        response, timings = await self._classify(request, call_deadline(context))
        context.set_trailing_metadata(timing_metadata(timings))
        return response

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyStreamRequest], context
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Each request runs as its own task through the shared batcher; responses go out
        as they finish. A failed request answers with its error; the stream goes on.

        At most max_stream_in_flight requests are held at once, computing or waiting to be
        written; beyond that the stream is not read, and HTTP/2 flow control holds the
        sender back."""
        responses: asyncio.Queue[pb.ClassifyStreamResponse | None] = asyncio.Queue()
        # Each message's request names its model; the stream's bound is the server's.
        room = asyncio.Semaphore(self._models.get("").settings.max_stream_in_flight)
        deadline = call_deadline(context)

        async def answer(message: pb.ClassifyStreamRequest) -> None:
            try:
                response, _ = await self._classify(message.request, deadline)
                await responses.put(pb.ClassifyStreamResponse(id=message.id, response=response))
            except Exception as error:  # answered per id; unexpected ones are logged there
                status = status_of(error).rich()
                await responses.put(
                    pb.ClassifyStreamResponse(
                        id=message.id,
                        error=pb.StreamError(code=status.code, message=status.message),
                        status=status,
                    )
                )

        answering: set[asyncio.Task] = set()

        async def read() -> None:
            try:
                messages = aiter(request_iterator)
                while True:
                    await room.acquire()
                    try:
                        message = await anext(messages)
                    except StopAsyncIteration:
                        break
                    task = asyncio.create_task(answer(message))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
                await asyncio.gather(*answering)
            finally:  # wakes the writer below, also when reading failed
                await responses.put(None)

        reader = asyncio.create_task(read())
        try:
            while (response := await responses.get()) is not None:
                yield response
                room.release()
            await reader  # surfaces a failed read (e.g. an undecodable message)
        finally:
            reader.cancel()
            for task in answering:
                task.cancel()

    async def ModelInfo(self, request: pb.ModelInfoRequest, context) -> pb.ModelInfoResponse:
        served = self._model(request)
        card, engine, settings = served.card, served.engine, served.settings
        model = engine.model
        workers = await engine.worker_status()  # refreshes `waiting` from a remote engine
        return pb.ModelInfoResponse(
            model=card.name,
            name=served.name,
            task=str(card.task),
            architecture=model.model_class,
            labels=card.labels,
            max_length=card.max_length,
            hidden_size=card.hidden_size,
            vocab_size=card.vocab_size,
            outputs=list(model.outputs),
            dtype=precision_label(settings.backend, settings.dtype, settings.quantize),
            max_items_per_request=settings.max_items_per_request,
            max_tokens_per_request=settings.max_tokens_per_request,
            queued_items=engine.waiting,
            workers=[_worker_info(w, served.shared_with.get(w.worker_id, ())) for w in workers],
            frontend_pid=os.getpid(),
            frontends=settings.frontends,
            task_type=_TASK[card.task],
            compute_dtype=_COMPUTE_DTYPE[settings.dtype],
            quantization=_QUANTIZATION[settings.backend, settings.quantize],
            served_rpcs=served_rpcs(card),
            mask_token=card.tokenizer.mask_token,
            embedding=self._embedding_info(served),
            # Resolved at start-up (never auto here); its version cannot change while serving.
            backend=backend_label(settings.backend),
            backend_type=_BACKEND[settings.backend],
        )

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ServedModel(
                    name=m.name,
                    model=m.card.name,
                    task_type=_TASK[m.card.task],
                    task=str(m.card.task),
                    serving=m.engine.alive > 0,
                    default=m.name == self._models.default,
                )
                for m in self._models
            ]
        )

    @staticmethod
    def _embedding_info(served: ServedModel) -> pb.EmbeddingInfo | None:
        config = served.embedder.config
        if config is None:
            return None
        return pb.EmbeddingInfo(
            pooling=config.pooling,
            source=config.source,
            include_prompt=config.include_prompt,
            normalized=config.normalized,
            dimension=served.card.hidden_size,
            max_seq_length=served.embedder.max_seq_length,
            prompts=list(config.prompts),
            default_prompt_name=config.default_prompt_name or "",
            truncate_dim=config.truncate_dim or 0,
        )


def _worker_info(status: WorkerStatus, shared_with: tuple[str, ...]) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        id=status.worker_id,
        device=status.device,
        pid=status.pid,
        ready=status.ready,
        batches=status.batches,
        items=status.items,
        restarts=status.restarts,
        busy=status.busy,
        shared_with=shared_with,
    )
