"""The gRPC servicer: converts protos to plain inputs, calls `Infer`, converts back. The task
RPCs' methods are in service_tasks.py, the conversions both use in convert.py, ModelInfo's
rendering of a model's description in model_info.py.

No logic of its own beyond the wire format; errors are mapped by `status.py` and calls
counted by `metrics.py`, both wrapped around each method by `handlers.py`.
"""

from collections.abc import AsyncIterator

import numpy as np

from pipeserve.server.edge.convert import (
    FLOAT_DTYPE,
    call_deadline,
    enum_value,
    from_choices,
    labels_proto,
    text_options,
    timings_proto,
)
from pipeserve.server.edge.model_info import TASK, model_info
from pipeserve.server.edge.service_tasks import TaskServicer
from pipeserve.server.edge.status import status_of
from pipeserve.server.edge.streams import answer_each
from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import ScoreFunction
from pipeserve.server.pipeline.inputs import (
    EncodeFlags,
    ModelInput,
    TextInput,
    TokenIds,
)
from pipeserve.server.pipeline.windows import WindowAggregation
from pipeserve.server.requests.describe import describe
from pipeserve.server.requests.models import Models, ServedModel
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from pipeserve.wire import SCORE_FUNCTIONS, WINDOW_AGGREGATIONS, to_proto

# Unset: as the model config says.
_FUNCTION = {pb.FUNCTION_TO_APPLY_UNSPECIFIED: None, **from_choices(SCORE_FUNCTIONS, ScoreFunction)}
_WINDOW_AGGREGATION = {
    pb.WINDOW_AGGREGATION_UNSPECIFIED: WindowAggregation.MEAN,
    **from_choices(WINDOW_AGGREGATIONS, WindowAggregation),
}


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
        options = text_options(request.options, request.padding)
        padded, timings = await infer.tokenize(items, options, flags)
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
        return pb.TokenizeResponse(encodings=encodings, timings=timings_proto(timings))

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
        return pb.ForwardResponse(
            outputs=[
                pb.NamedTensor(name=name, tensor=to_proto(array.astype(dtype, copy=False)))
                for name, array in result.outputs.items()
            ],
            sequence_lengths=result.sequence_lengths.tolist(),
            timings=timings_proto(result.timings),
        )

    async def _classify(
        self, request: pb.ClassifyRequest, deadline: float | None
    ) -> pb.ClassifyResponse:
        model = self._model(request)
        items = [_model_input(i, item) for i, item in enumerate(request.inputs)]
        function = enum_value(_FUNCTION, request.function_to_apply, "function_to_apply")
        # Both set, one would be ignored: refused rather than guessed.
        if request.all_labels and request.top_k:
            raise InvalidInput(f"set top_k or all_labels, not both; got top_k {request.top_k}")
        top_k = None if request.all_labels else (request.top_k or 1)
        options = text_options(request.options)
        aggregation = enum_value(
            _WINDOW_AGGREGATION, request.window_aggregation, "window_aggregation"
        )
        if request.HasField("stride"):
            result = await model.classify.classify_windows(
                items, function, top_k, request.stride, aggregation, options, deadline
            )
        elif request.window_aggregation != pb.WINDOW_AGGREGATION_UNSPECIFIED:
            raise InvalidInput("window_aggregation needs stride: only windows are aggregated")
        else:
            result = await model.classify.classify(items, function, top_k, options, deadline)
        return labels_proto(result.labels, result.timings, result.windows)

    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:
        return await self._classify(request, call_deadline(context))

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyStreamRequest], context
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Each request runs as its own task through the shared batcher (`streams.py`); a
        failed request answers with its error, and the stream goes on."""
        deadline = call_deadline(context)

        async def answer(message: pb.ClassifyStreamRequest) -> pb.ClassifyStreamResponse:
            try:
                response = await self._classify(message.request, deadline)
                return pb.ClassifyStreamResponse(id=message.id, response=response)
            except Exception as error:  # answered per id; unexpected ones are logged there
                status = status_of(error).rich()
                return pb.ClassifyStreamResponse(id=message.id, status=status)

        # Each message's request names its model; the stream's bound is the server's.
        in_flight = self._models.get("").settings.max_stream_in_flight
        async for response in answer_each(request_iterator, answer, in_flight):
            yield response

    async def ModelInfo(self, request: pb.ModelInfoRequest, context) -> pb.ModelInfoResponse:
        return model_info(await describe(self._model(request)))

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ServedModel(
                    name=m.name,
                    model=m.card.name,
                    task_type=TASK[m.card.task],
                    serving=m.engine.alive > 0,
                    default=m.name == self._models.default,
                )
                for m in self._models
            ]
        )
