"""The blocking client."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from pipeserve.client import bind, build, calls, parse
from pipeserve.client.build import FunctionToApply, ModelInputLike, WindowAggregation
from pipeserve.client.channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallDefaults,
    ChannelOwner,
    Endpoint,
)
from pipeserve.client.errors import translating_rpc_errors
from pipeserve.client.fanout import DEFAULT_SPLIT_CONCURRENCY, AsyncFanout, BlockingFanout
from pipeserve.client.results import StreamResult
from pipeserve.client.tasks import TaskCalls
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub


class InferenceCalls:
    """What Client and AsyncClient hold: the call defaults, a stub on a blocking or an asyncio
    channel, and the fanout that makes each call (whole, or in parts within the limits)."""

    _asyncio = False

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
        split_concurrency: int = DEFAULT_SPLIT_CONCURRENCY,
    ) -> None:
        endpoint = Endpoint(
            target,
            credentials=credentials,
            token=token,
            max_message_bytes=max_message_bytes,
            channel_options=channel_options,
        )
        self._call_options = CallDefaults(endpoint, timeout, wait_for_ready)
        self._channel = endpoint.aio_channel() if self._asyncio else endpoint.channel()
        self._stub = InferenceStub(self._channel)
        fanout = AsyncFanout if self._asyncio else BlockingFanout
        self._fanout = fanout(self._stub, self._call_options, split_concurrency)


class Client(InferenceCalls, TaskCalls, ChannelOwner):
    """A blocking client of one pipeserve server, or of several replicas.

    `target` is a gRPC address such as "127.0.0.1:50051". `timeout` (seconds) is the default
    deadline of every call; each method's own `timeout` overrides it, and None there means the
    default. `max_message_bytes` caps messages both ways (Forward outputs can be large).
    `wait_for_ready` makes calls wait (up to their deadline) for a server that is not up yet
    instead of failing at once with UNAVAILABLE. `credentials` (see `tls_credentials`) makes
    the channel TLS; `token` is sent as a bearer token with every call.

    To spread calls over replicas, pass a list of addresses (["10.0.0.1:50051",
    "10.0.0.2:50051"]) or a "dns:///name:port" target that resolves to them (a headless
    Service): calls then go round_robin over the reachable replicas, and a call that a replica
    answers UNAVAILABLE is retried once, on another.

    A server may serve several models: every call method takes `model=`, the name of the one
    to run (`list_models()` lists them); empty means the server's default model. A name it
    does not serve raises PipeserveError with NOT_FOUND.

    A call with more inputs than the server takes in one request (ModelInfo's
    max_items_per_request, max_tokens_per_request) is sent as several requests within them,
    `split_concurrency` at a time (default 4); the answers come back joined, in input order, as
    one request's would, and the call's timeout bounds them all. The limits are asked of the
    server once per model. `split_concurrency=0` sends every call whole, for the server to
    refuse when it is too large.

    Failed calls raise PipeserveError (a call sent in parts: the first part's failure); inputs or
    options that cannot be sent raise TypeError or ValueError before any call is made. Safe to
    share between threads.
    """

    # The core unary calls, each written once in calls.py: arguments, docstring, request,
    # parser; the task RPCs' come from the mixin, each written once in its module of tasks/.
    tokenize = bind.blocking(calls.tokenize)
    forward = bind.blocking(calls.forward)
    classify = bind.blocking(calls.classify)
    model_info = bind.blocking(calls.model_info)
    list_models = bind.blocking(calls.list_models)

    def classify_stream(
        self,
        requests: Iterable[tuple[str, Iterable[ModelInputLike]]],
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int | None = None,
        window_aggregation: WindowAggregation = None,
        model: str = "",
        timeout: float | None = None,
    ) -> Iterator[StreamResult]:
        """Classifies a stream of (id, inputs) requests over one bidirectional call.

        Yields one StreamResult per request as the server answers, possibly out of order; match
        them by id. A request the server refuses yields a StreamResult with `error` set and the
        stream goes on. `requests` may be lazy (a generator fed from a queue, say): it is read
        while results come back. An exception raised while reading it, or by an input that
        cannot be sent, is re-raised after the results of the requests before it. `timeout`
        bounds the whole stream. The options apply to every request. Stopping the iteration
        early cancels the call.
        """
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
        # Options were checked above, eagerly; the call itself starts on the first next().
        return self._stream(feed, requests, timeout)

    def _stream(
        self,
        feed: build.ClassifyStreamFeed,
        requests: Iterable[tuple[str, Iterable[ModelInputLike]]],
        timeout: float | None,
    ) -> Iterator[StreamResult]:
        call = self._stub.ClassifyStream(feed.sync(requests), **self._call_options(timeout))
        try:
            with translating_rpc_errors():
                for response in call:
                    yield parse.stream_result(response)
        finally:
            call.cancel()
        feed.raise_error()
