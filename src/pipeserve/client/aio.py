"""The asyncio client: Client's methods, awaitable, over grpc.aio."""

from collections.abc import AsyncIterable, AsyncIterator, Iterable

from pipeserve.client import bind, build, calls, parse
from pipeserve.client.build import FunctionToApply, ModelInputLike, WindowAggregation
from pipeserve.client.channel import AsyncChannelOwner
from pipeserve.client.client import InferenceCalls
from pipeserve.client.errors import translating_rpc_errors
from pipeserve.client.results import StreamResult
from pipeserve.client.tasks import AsyncTaskCalls

StreamRequests = (
    Iterable[tuple[str, Iterable[ModelInputLike]]]
    | AsyncIterable[tuple[str, Iterable[ModelInputLike]]]
)


class AsyncClient(InferenceCalls, AsyncTaskCalls, AsyncChannelOwner):
    """The asyncio twin of Client: same arguments, same methods, each awaited.

    Create it inside the running event loop (grpc.aio binds the channel to it). classify_stream
    is not awaited: it returns an async iterator, and takes a sync or an async iterable. See
    Client for what each argument means; a call sent in parts has its parts in flight as tasks.
    """

    _asyncio = True

    # The core unary calls, each written once in calls.py: arguments, docstring, request,
    # parser; the task RPCs' come from the mixin, each written once in its module of tasks/.
    tokenize = bind.awaitable(calls.tokenize)
    forward = bind.awaitable(calls.forward)
    classify = bind.awaitable(calls.classify)
    model_info = bind.awaitable(calls.model_info)
    list_models = bind.awaitable(calls.list_models)

    def classify_stream(
        self,
        requests: StreamRequests,
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int | None = None,
        window_aggregation: WindowAggregation = None,
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
