"""The asyncio client: Client's methods, awaitable, over grpc.aio."""

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio
import numpy as np

from pipeserve.client import build, build_tasks, parse
from pipeserve.client.build import (
    ForwardDType,
    FunctionToApply,
    ModelInputLike,
    PaddingLike,
    TextLike,
    WindowAggregation,
)
from pipeserve.client.build_tasks import AggregationStrategy
from pipeserve.client.channel import DEFAULT_MAX_MESSAGE_BYTES, CallDefaults, Endpoint
from pipeserve.client.errors import translating_rpc_errors
from pipeserve.client.results import (
    Encoding,
    Entity,
    ForwardOutput,
    LabelScore,
    MaskFill,
    ModelInfo,
    RankedDocument,
    ServedModel,
    StreamResult,
    Windowed,
)
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

StreamRequests = (
    Iterable[tuple[str, Iterable[ModelInputLike]]]
    | AsyncIterable[tuple[str, Iterable[ModelInputLike]]]
)


class AsyncClient:
    """The asyncio twin of Client: same arguments, same methods, each awaited.

    Create it inside the running event loop (grpc.aio binds the channel to it). classify_stream
    is not awaited: it returns an async iterator, and takes a sync or an async iterable. See
    Client for what each argument means.
    """

    # `timeout` stays a parameter (ruff's ASYNC109 would have asyncio.timeout) because it becomes
    # the gRPC deadline, which the server sees and honours; a local asyncio timeout would not.

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        endpoint = Endpoint(
            target,
            credentials=credentials,
            token=token,
            max_message_bytes=max_message_bytes,
            channel_options=channel_options,
        )
        self._call_options = CallDefaults(endpoint, timeout, wait_for_ready)
        self._channel = endpoint.aio_channel()
        self._stub = InferenceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def tokenize(
        self,
        inputs: Iterable[TextLike],
        *,
        padding: PaddingLike = "longest",
        truncation: bool = True,
        max_length: int | None = None,
        return_attention_mask: bool = True,
        return_token_type_ids: bool | None = None,
        return_tokens: bool = False,
        return_offsets: bool = False,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Encoding]:
        """As Client.tokenize."""
        request = build.tokenize_request(
            inputs,
            model=model,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=return_attention_mask,
            return_token_type_ids=return_token_type_ids,
            return_tokens=return_tokens,
            return_offsets=return_offsets,
        )
        with translating_rpc_errors():
            response = await self._stub.Tokenize(request, **self._call_options(timeout))
        return parse.encodings(response)

    async def forward(
        self,
        inputs: Iterable[ModelInputLike],
        *,
        outputs: Sequence[str] = (),
        dtype: ForwardDType = "float32",
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ForwardOutput:
        """As Client.forward."""
        request = build.forward_request(
            inputs,
            model=model,
            outputs=outputs,
            dtype=dtype,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = await self._stub.Forward(request, **self._call_options(timeout))
        return parse.forward_output(response)

    async def classify(
        self,
        inputs: Iterable[ModelInputLike],
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int | None = None,
        window_aggregation: WindowAggregation = "mean",
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Windowed[LabelScore]]:
        """As Client.classify."""
        request = build.classify_request(
            inputs,
            model=model,
            function_to_apply=function_to_apply,
            top_k=top_k,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            window_aggregation=window_aggregation,
        )
        with translating_rpc_errors():
            response = await self._stub.Classify(request, **self._call_options(timeout))
        return parse.classifications(response)

    def classify_stream(
        self,
        requests: StreamRequests,
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int | None = None,
        window_aggregation: WindowAggregation = "mean",
        model: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[StreamResult]:
        """As Client.classify_stream, as an async iterator: `async for result in ...`."""
        # A plain def (not async def) so that bad options raise here, not on the first anext().
        feed = build.ClassifyStreamFeed(
            build.classify_options(
                model=model,
                function_to_apply=function_to_apply,
                top_k=top_k,
                truncation=truncation,
                max_length=max_length,
                stride=stride,
                window_aggregation=window_aggregation,
            )
        )
        return self._stream(feed, requests, timeout)

    async def _stream(
        self,
        feed: build.ClassifyStreamFeed,
        requests: StreamRequests,
        timeout: float | None,  # noqa: ASYNC109
    ) -> AsyncIterator[StreamResult]:
        call = self._stub.ClassifyStream(feed.aio(requests), **self._call_options(timeout))
        try:
            with translating_rpc_errors():
                async for response in call:
                    yield parse.stream_result(response)
        finally:
            call.cancel()
        feed.raise_error()

    async def classify_tokens(
        self,
        inputs: Iterable[str],
        *,
        aggregation_strategy: AggregationStrategy = "none",
        ignore_labels: Iterable[str] | None = None,
        stride: int | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Windowed[Entity]]:
        """As Client.classify_tokens."""
        request = build_tasks.classify_tokens_request(
            inputs,
            model=model,
            aggregation_strategy=aggregation_strategy,
            ignore_labels=ignore_labels,
            stride=stride,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = await self._stub.ClassifyTokens(request, **self._call_options(timeout))
        return parse.token_classifications(response)

    async def fill_mask(
        self,
        inputs: Iterable[str],
        *,
        top_k: int = 5,
        targets: Iterable[str] | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[list[MaskFill]]:
        """As Client.fill_mask."""
        request = build_tasks.fill_mask_request(
            inputs,
            model=model,
            top_k=top_k,
            targets=targets,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = await self._stub.FillMask(request, **self._call_options(timeout))
        return parse.mask_fills(response)

    async def model_info(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        model: str = "",
    ) -> ModelInfo:
        """As Client.model_info."""
        with translating_rpc_errors():
            response = await self._stub.ModelInfo(
                pb.ModelInfoRequest(model=model), **self._call_options(timeout)
            )
        return parse.model_info(response)

    # --- Embeddings, reranking, zero-shot ---

    async def embed(
        self,
        inputs: Iterable[str],
        *,
        normalize: bool = False,
        truncate_dim: int | None = None,
        dtype: ForwardDType = "float32",
        prompt: str | None = None,
        prompt_name: str | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> np.ndarray:
        """As Client.embed."""
        request = build_tasks.embed_request(
            inputs,
            normalize=normalize,
            truncate_dim=truncate_dim,
            dtype=dtype,
            prompt=prompt,
            prompt_name=prompt_name,
            truncation=truncation,
            max_length=max_length,
            model=model,
        )
        with translating_rpc_errors():
            response = await self._stub.Embed(request, **self._call_options(timeout))
        return parse.embeddings(response)

    async def rerank(
        self,
        query: str,
        documents: Iterable[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[RankedDocument]:
        """As Client.rerank."""
        request = build_tasks.rerank_request(
            query,
            documents,
            top_n=top_n,
            return_documents=return_documents,
            raw_scores=raw_scores,
            truncation=truncation,
            max_length=max_length,
            model=model,
        )
        with translating_rpc_errors():
            response = await self._stub.Rerank(request, **self._call_options(timeout))
        return parse.ranked_documents(response, with_text=return_documents)

    async def classify_zero_shot(
        self,
        inputs: Iterable[str],
        candidate_labels: Iterable[str],
        *,
        hypothesis_template: str | None = None,
        multi_label: bool = False,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[list[LabelScore]]:
        """As Client.classify_zero_shot."""
        request = build_tasks.classify_zero_shot_request(
            inputs,
            candidate_labels,
            hypothesis_template=hypothesis_template,
            multi_label=multi_label,
            truncation=truncation,
            max_length=max_length,
            model=model,
        )
        with translating_rpc_errors():
            response = await self._stub.ClassifyZeroShot(request, **self._call_options(timeout))
        return parse.classifications(response)

    async def list_models(self, timeout: float | None = None) -> list[ServedModel]:  # noqa: ASYNC109
        """As Client.list_models."""
        with translating_rpc_errors():
            response = await self._stub.ListModels(
                pb.ListModelsRequest(), **self._call_options(timeout)
            )
        return parse.served_models(response)
