"""The blocking client."""

from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
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


class Client:
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

    Failed calls raise PipeserveError; inputs or options that cannot be sent raise TypeError or
    ValueError before any call is made. Safe to share between threads.
    """

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
        self._channel = endpoint.channel()
        self._stub = InferenceStub(self._channel)

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def tokenize(
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
        timeout: float | None = None,
    ) -> list[Encoding]:
        """Tokenizes texts or (text, text_pair) pairs with the model's tokenizer.

        `inputs` is a list even for one text: a bare string raises TypeError. `padding` is
        "longest" (also True), "max_length" or "do_not_pad" (also False). `max_length` None means
        the model's maximum. `return_token_type_ids` None means "when the model uses them".
        Returns one Encoding per input, in order.
        """
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
            response = self._stub.Tokenize(request, **self._call_options(timeout))
        return parse.encodings(response)

    def forward(
        self,
        inputs: Iterable[ModelInputLike],
        *,
        outputs: Sequence[str] = (),
        dtype: ForwardDType = "float32",
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> ForwardOutput:
        """Runs the model on texts, pairs or token ids and returns the named outputs.

        Each input is a text, a (text, text_pair), an Encoding from tokenize() (its padding is
        dropped) or a list / 1-D int array of token ids. `outputs` names what to return (see
        ModelInfo.outputs); empty means the head's own outputs. `dtype` is "float32" or
        "float16" for the returned float tensors.
        """
        request = build.forward_request(
            inputs,
            model=model,
            outputs=outputs,
            dtype=dtype,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = self._stub.Forward(request, **self._call_options(timeout))
        return parse.forward_output(response)

    def classify(
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
        timeout: float | None = None,
    ) -> list[Windowed[LabelScore]]:
        """Classifies each input (as forward() takes them); per input, its labels best first.

        `function_to_apply` is "softmax", "sigmoid", "none" (raw logits) or None for the model
        config's choice. `top_k` is how many labels per input; None means all of them. The result
        is always a list per input, whatever `top_k`.

        `stride` (an int) classifies a text longer than `max_length` (default: the model's) by
        windows overlapping by `stride` tokens, whose scores are combined by their "mean" or
        their "max" (`window_aggregation`); each result's `windows` says how many there were.
        With `stride` every input must be a text. Without, a long text is truncated (or, with
        `truncation=False`, refused).
        """
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
            response = self._stub.Classify(request, **self._call_options(timeout))
        return parse.classifications(response)

    def classify_stream(
        self,
        requests: Iterable[tuple[str, Iterable[ModelInputLike]]],
        *,
        function_to_apply: FunctionToApply = None,
        top_k: int | None = 1,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int | None = None,
        window_aggregation: WindowAggregation = "mean",
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

    def classify_tokens(
        self,
        inputs: Iterable[str],
        *,
        aggregation_strategy: AggregationStrategy = "none",
        ignore_labels: Iterable[str] | None = None,
        stride: int | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> list[Windowed[Entity]]:
        """Labels each token of the texts with a token-classification model (NER, POS), as
        transformers' pipeline("token-classification", aggregation_strategy=...).

        `aggregation_strategy` is "none" (one Entity per token, with its index), "simple",
        "first", "average" or "max" (tokens grouped into entities). Entities labelled one of
        `ignore_labels` (default ["O"]) are left out. `stride` labels a text longer than
        `max_length` whole, by windows overlapping by `stride` tokens (needs a strategy other
        than "none"). Returns per text its entities in text order; `text[e.start:e.end]` is the
        entity as written, and each list's `windows` how many windows it took.
        """
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
            response = self._stub.ClassifyTokens(request, **self._call_options(timeout))
        return parse.token_classifications(response)

    def fill_mask(
        self,
        inputs: Iterable[str],
        *,
        top_k: int = 5,
        targets: Iterable[str] | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> list[list[MaskFill]]:
        """Fills in each mask token (ModelInfo.mask_token, e.g. "[MASK]") of the texts with a
        masked language model, as transformers' pipeline("fill-mask").

        Returns per text, per mask in text order, its `top_k` best candidates (`targets`: only
        among these tokens). Each text needs at least one mask token.
        """
        request = build_tasks.fill_mask_request(
            inputs,
            model=model,
            top_k=top_k,
            targets=targets,
            truncation=truncation,
            max_length=max_length,
        )
        with translating_rpc_errors():
            response = self._stub.FillMask(request, **self._call_options(timeout))
        return parse.mask_fills(response)

    def model_info(self, timeout: float | None = None, *, model: str = "") -> ModelInfo:
        """Describes a served model (default: the server's default model), the server's
        limits and its workers."""
        request = pb.ModelInfoRequest(model=model)
        with translating_rpc_errors():
            response = self._stub.ModelInfo(request, **self._call_options(timeout))
        return parse.model_info(response)

    # --- Embeddings, reranking, zero-shot ---

    def embed(
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
        timeout: float | None = None,
    ) -> np.ndarray:
        """Sentence embeddings of `inputs`, as SentenceTransformer(model).encode() gives them.

        Returns an [inputs, dimension] numpy array (float32, or float16 with dtype="float16").
        The server pools as the checkpoint's modules.json says (mean pooling without one) and
        applies its Normalize module. `normalize` L2-normalises each row after `truncate_dim`
        (keep the first dimensions, for Matryoshka models). `prompt` is put before every text;
        `prompt_name` picks one of the checkpoint's prompts (ModelInfo.embedding.prompts).
        `max_length` None means the checkpoint's max_seq_length.
        """
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
            response = self._stub.Embed(request, **self._call_options(timeout))
        return parse.embeddings(response)

    def rerank(
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
        timeout: float | None = None,
    ) -> list[RankedDocument]:
        """Ranks `documents` by relevance to `query` with a cross-encoder, best first, as
        CrossEncoder(model).rank(query, documents) does.

        Scores are the model's activation of its one logit (sigmoid unless the checkpoint saved
        another), or the raw logit with `raw_scores`. `top_n` None returns every document;
        `return_documents` puts each document's text in its result.
        """
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
            response = self._stub.Rerank(request, **self._call_options(timeout))
        return parse.ranked_documents(response, with_text=return_documents)

    def classify_zero_shot(
        self,
        inputs: Iterable[str],
        candidate_labels: Iterable[str],
        *,
        hypothesis_template: str | None = None,
        multi_label: bool = False,
        truncation: bool = True,
        max_length: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> list[list[LabelScore]]:
        """Zero-shot classification of each input against `candidate_labels` with an NLI
        model, as transformers' pipeline("zero-shot-classification").

        Per input, every label best first (LabelScore.index is its place in
        candidate_labels). `hypothesis_template` (default "This example is {}.") must hold
        {} where the label goes; `multi_label` scores each label on its own.
        """
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
            response = self._stub.ClassifyZeroShot(request, **self._call_options(timeout))
        return parse.classifications(response)

    def list_models(self, timeout: float | None = None) -> list[ServedModel]:
        """The models the server serves; each method's `model=` takes one of their names."""
        with translating_rpc_errors():
            response = self._stub.ListModels(pb.ListModelsRequest(), **self._call_options(timeout))
        return parse.served_models(response)
