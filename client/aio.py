"""The asyncio client: Client's methods, awaitable, over grpc.aio."""

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
import grpc.aio

from pipeserve.client import convert
from pipeserve.client.convert import (
    Encoding,
    ForwardDType,
    ForwardOutput,
    FunctionToApply,
    LabelScore,
    ModelInfo,
    ModelInputLike,
    PaddingLike,
    StreamResult,
    TextLike,
)
from pipeserve.client.errors import translating_rpc_errors
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
        max_message_bytes: int = convert.DEFAULT_MAX_MESSAGE_BYTES,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        self._settings = convert.ClientSettings(
            target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            channel_options=channel_options,
            token=token,
            wait_for_ready=wait_for_ready,
        )
        self._channel = self._settings.open_channel(grpc.aio, credentials)
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
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Encoding]:
        """As Client.tokenize."""
        request = convert.tokenize_request(
            inputs,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=return_attention_mask,
            return_token_type_ids=return_token_type_ids,
            return_tokens=return_tokens,
            return_offsets=return_offsets,
        )
        with translating_rpc_errors():
            response = await self._stub.Tokenize(request, **self._settings.call_options(timeout))
        return convert.parse_encodings(response)

    async def forward(
        self,
        inputs: Iterable[ModelInputLike],
        *,
        outputs: Sequence[str] = (),
        dtype: ForwardDType = "float32",
        truncation: bool = True,
        max_length: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> ForwardOutput:
        """As Client.forward."""
        request = convert.forward_request(
            inputs, outputs=outputs, dtype=dtype, truncation=truncation, max_length=max_length
        )
        with translating_rpc_errors():
            response = await self._stub.Forward(request, **self._settings.call_options(timeout))
        return convert.parse_forward(response)

    async def classify(
        self,
        inputs: Iterable[ModelInputLike],
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[list[LabelScore]]:
        """As Client.classify."""
        request = convert.classify_request(
            inputs,
            function_to_apply=function_to_apply,
            top_k=top_k,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = await self._stub.Classify(request, **self._settings.call_options(timeout))
        return convert.parse_classifications(response)

    def classify_stream(
        self,
        requests: StreamRequests,
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamResult]:
        """As Client.classify_stream, as an async iterator: `async for result in ...`."""
        # A plain def (not async def) so that bad options raise here, not on the first anext().
        feed = convert.ClassifyStreamFeed(
            convert.classify_options(
                function_to_apply=function_to_apply,
                top_k=top_k,
                truncation=truncation,
                max_length=max_length,
            )
        )
        return self._stream(feed, requests, timeout)

    async def _stream(
        self,
        feed: convert.ClassifyStreamFeed,
        requests: StreamRequests,
        timeout: float | None,  # noqa: ASYNC109
    ) -> AsyncIterator[StreamResult]:
        call = self._stub.ClassifyStream(feed.aio(requests), **self._settings.call_options(timeout))
        try:
            with translating_rpc_errors():
                async for response in call:
                    yield convert.parse_stream_response(response)
        finally:
            call.cancel()
        feed.raise_error()

    async def model_info(self, timeout: float | None = None) -> ModelInfo:  # noqa: ASYNC109
        """As Client.model_info."""
        with translating_rpc_errors():
            response = await self._stub.ModelInfo(
                pb.ModelInfoRequest(), **self._settings.call_options(timeout)
            )
        return convert.parse_model_info(response)
