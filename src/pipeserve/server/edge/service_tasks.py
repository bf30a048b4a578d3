"""The servicer methods of the task RPCs (ClassifyTokens, FillMask, Embed, Rerank,
ClassifyZeroShot), mixed into InferenceService (service.py): protos in, the request path of
each task (requests/classify_tokens.py, fill_mask.py, embed.py, rerank.py, zero_shot.py),
protos out.
"""

from collections.abc import Callable
from typing import Any

from pipeserve.server.edge.convert import (
    FLOAT_DTYPE,
    call_deadline,
    enum_value,
    from_choices,
    labels_proto,
    text_options,
    timings_proto,
)
from pipeserve.server.pipeline.classify_tokens import DEFAULT_IGNORE_LABELS, Strategy
from pipeserve.server.pipeline.fill_mask import DEFAULT_TOP_K
from pipeserve.server.pipeline.zero_shot import DEFAULT_TEMPLATE
from pipeserve.server.requests.models import ServedModel
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import AGGREGATION_STRATEGIES, to_proto

# Unset: none, as the pipeline.
_STRATEGY = {
    pb.AGGREGATION_STRATEGY_UNSPECIFIED: Strategy.NONE,
    **from_choices(AGGREGATION_STRATEGIES, Strategy),
}


class TaskServicer:
    """InferenceService's task RPCs; `_model` (InferenceService's) resolves a request's model."""

    _model: Callable[[Any], ServedModel]

    async def ClassifyTokens(
        self, request: pb.ClassifyTokensRequest, context
    ) -> pb.ClassifyTokensResponse:
        tasks = self._model(request).classify_tokens
        strategy = enum_value(_STRATEGY, request.aggregation_strategy, "aggregation_strategy")
        ignore = (
            list(request.ignore_labels.labels)
            if request.HasField("ignore_labels")
            else list(DEFAULT_IGNORE_LABELS)
        )
        results, timings = await tasks.classify_tokens(
            list(request.inputs),
            strategy,
            ignore,
            request.stride if request.HasField("stride") else None,
            text_options(request.options),
            call_deadline(context),
        )
        response = pb.ClassifyTokensResponse(timings=timings_proto(timings))
        for result in results:
            item = response.results.add(windows=result.windows)
            for e in result.entities:
                entity = item.entities.add(
                    label=e.label, score=e.score, word=e.word, start=e.start, end=e.end
                )
                if e.index is not None:
                    entity.index = e.index
        return response

    async def FillMask(self, request: pb.FillMaskRequest, context) -> pb.FillMaskResponse:
        results, timings = await self._model(request).fill_mask.fill_mask(
            list(request.inputs),
            request.top_k if request.HasField("top_k") else DEFAULT_TOP_K,
            list(request.targets),
            text_options(request.options),
            call_deadline(context),
        )
        response = pb.FillMaskResponse(timings=timings_proto(timings))
        for masks in results:
            item = response.results.add()
            for mask in masks:
                filled = item.masks.add(position=mask.position)
                for c in mask.candidates:
                    filled.candidates.add(
                        score=c.score, token=c.token, token_str=c.token_str, sequence=c.sequence
                    )
        return response

    async def Embed(self, request: pb.EmbedRequest, context) -> pb.EmbedResponse:
        dtype = enum_value(FLOAT_DTYPE, request.output_dtype, "output_dtype")
        result = await self._model(request).embedder.embed(
            list(request.inputs),
            normalize=request.normalize,
            truncate_dim=request.truncate_dim or None,
            # Set and empty is no prompt at all; unset, the checkpoint's default.
            prompt=request.prompt if request.HasField("prompt") else None,
            prompt_name=request.prompt_name or None,
            options=text_options(request.options),
            deadline=call_deadline(context),
        )
        return pb.EmbedResponse(
            embeddings=to_proto(result.embeddings.astype(dtype, copy=False)),
            sequence_lengths=result.sequence_lengths,
            timings=timings_proto(result.timings),
        )

    async def Rerank(self, request: pb.RerankRequest, context) -> pb.RerankResponse:
        documents = list(request.documents)
        result = await self._model(request).rerank.rerank(
            request.query,
            documents,
            top_n=request.top_n,
            raw_scores=request.raw_scores,
            options=text_options(request.options),
            deadline=call_deadline(context),
        )
        response = pb.RerankResponse(timings=timings_proto(result.timings))
        for ranked in result.ranked:
            text = documents[ranked.index] if request.return_documents else ""
            response.results.add(index=ranked.index, score=ranked.score, document=text)
        return response

    async def ClassifyZeroShot(
        self, request: pb.ClassifyZeroShotRequest, context
    ) -> pb.ClassifyZeroShotResponse:
        result = await self._model(request).zero_shot.classify_zero_shot(
            list(request.inputs),
            list(request.candidate_labels),
            template=request.hypothesis_template or DEFAULT_TEMPLATE,
            multi_label=request.multi_label,
            options=text_options(request.options),
            deadline=call_deadline(context),
        )
        response = labels_proto(result.labels, result.timings)
        return pb.ClassifyZeroShotResponse(results=response.results, timings=response.timings)
