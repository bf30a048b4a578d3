"""Python arguments -> request protos, and response protos -> Python results.

Everything here is pure (no I/O), so the sync and async clients share it and stay thin: each
client method builds a request here, makes one call, and parses the response here.
"""

import ipaddress
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import grpc
import numpy as np

from pipeserve.client.errors import PipeserveError, from_status
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import from_proto

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Encoding:
    """The tokenization of one input, as Tokenize returns it.

    Fields the request did not ask for are empty lists. Pass an Encoding back to forward() or
    classify() to skip tokenizing again; its padding is removed using `attention_mask`.
    """

    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields that were returned."""
        full: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
            "tokens": self.tokens,
            "offsets": [list(span) for span in self.offsets],
        }
        return {name: value for name, value in full.items() if value or name == "input_ids"}


@dataclass(frozen=True)
class LabelScore:
    """One label of a classification, with its score and its class index in the logits."""

    label: str
    score: float
    index: int

    def __str__(self) -> str:
        return f"{self.label}: {self.score:.4f}"

    def to_dict(self) -> dict[str, Any]:
        """The transformers text-classification pipeline's shape: {"label": ..., "score": ...}."""
        return {"label": self.label, "score": self.score}


class ForwardOutput(dict[str, np.ndarray]):
    """Named model outputs, in the order asked for, like transformers' ModelOutput.

    Read an output by attribute (`out.logits`), by name (`out["logits"]`) or by position
    (`out[0]`). Per-token outputs are padded to the longest input; `sequence_lengths` gives each
    input's real number of tokens.
    """

    sequence_lengths: np.ndarray

    def __init__(self, outputs: Iterable[tuple[str, np.ndarray]], sequence_lengths: np.ndarray):
        super().__init__(outputs)
        self.sequence_lengths = sequence_lengths

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __getattr__(self, name: str) -> np.ndarray:
        # Only reached for names that are not real attributes; dunder lookups (pickle, copy)
        # must see AttributeError rather than a KeyError.
        if not name.startswith("__"):
            try:
                return super().__getitem__(name)
            except KeyError:
                pass
        raise AttributeError(f"{type(self).__name__} has no output {name!r}")

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *self.keys()]

    def __repr__(self) -> str:
        # Full arrays (hidden states) would flood the screen; shapes tell what came back.
        shown = ", ".join(f"{name}=<{a.dtype} {list(a.shape)}>" for name, a in self.items())
        return f"ForwardOutput({shown}, sequence_lengths={self.sequence_lengths.tolist()})"

    def to_tuple(self) -> tuple[np.ndarray, ...]:
        """The outputs in order, as ModelOutput.to_tuple()."""
        return tuple(self.values())


@dataclass(frozen=True)
class WorkerInfo:
    """A server worker process and the device it is pinned to."""

    id: int
    device: str
    pid: int
    ready: bool
    batches: int = 0
    items: int = 0
    restarts: int = 0
    busy: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model, the server's limits and its workers (ModelInfoResponse)."""

    model: str
    task: str
    architecture: str
    labels: list[str]
    max_length: int
    hidden_size: int
    vocab_size: int
    outputs: list[str]
    dtype: str
    max_items_per_request: int
    workers: list[WorkerInfo]
    max_tokens_per_request: int = 0
    frontend_pid: int = 0
    frontends: int = 0
    queued_items: int = 0


@dataclass(frozen=True)
class StreamResult:
    """The answer to one classify_stream request: `results` on success, else `error`."""

    id: str
    results: list[list[LabelScore]] | None = None
    error: PipeserveError | None = None


# --- Inputs -----------------------------------------------------------------------------------

TextPair: TypeAlias = tuple[str, str]
"""(text, text_pair); a two-item list or a {"text", "text_pair"} mapping is accepted too."""

TextLike: TypeAlias = str | TextPair | Mapping[str, str]
"""One Tokenize input: a text or a text pair."""

TokenIdsLike: TypeAlias = Encoding | Sequence[int] | np.ndarray
"""Already tokenized input: an Encoding from tokenize(), a list of ids or a 1-D int array."""

ModelInputLike: TypeAlias = TextLike | TokenIdsLike
"""One Forward or Classify input."""

PaddingLike: TypeAlias = Literal["longest", "max_length", "do_not_pad"] | bool
ForwardDType: TypeAlias = Literal["float32", "float16"]
FunctionToApply: TypeAlias = Literal["softmax", "sigmoid", "none"] | None

_PADDING = {
    "longest": pb.PADDING_LONGEST,
    "max_length": pb.PADDING_MAX_LENGTH,
    "do_not_pad": pb.PADDING_NONE,
}
_TRUNCATION = {"longest_first": True, "do_not_truncate": False}
_DTYPE = {"float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16}
_FUNCTION = {
    "softmax": pb.FUNCTION_TO_APPLY_SOFTMAX,
    "sigmoid": pb.FUNCTION_TO_APPLY_SIGMOID,
    "none": pb.FUNCTION_TO_APPLY_NONE,
}


def _items(inputs: Any, what: str) -> list[Any]:
    # A lone string is iterable too and would silently become one input per character.
    if isinstance(inputs, str | bytes):
        raise TypeError(f"{what} must be a list, not a single string; wrap it: [text]")
    if isinstance(inputs, Mapping | Encoding) or not isinstance(inputs, Iterable):
        raise TypeError(
            f"{what} must be a list of inputs, got {type(inputs).__name__}; wrap it: [x]"
        )
    items = list(inputs)
    if not items:
        raise ValueError(f"{what} is empty; give at least one input")
    return items


def _as_pair(item: Any) -> pb.TextPair | None:
    if isinstance(item, Mapping):
        if set(item) != {"text", "text_pair"}:
            raise ValueError(
                f"a pair mapping needs exactly 'text' and 'text_pair', got {set(item)}"
            )
        item = (item["text"], item["text_pair"])
    if (
        isinstance(item, tuple | list)
        and len(item) == 2
        and all(isinstance(part, str) for part in item)
    ):
        return pb.TextPair(text=item[0], text_pair=item[1])
    return None


def _as_token_ids(item: Any) -> pb.TokenIds | None:
    if isinstance(item, Encoding):
        ids, types = item.input_ids, item.token_type_ids
        if item.attention_mask:
            # Every id sent counts, so the padding tokenize() added must go; the mask says which
            # they are whichever side the tokenizer pads on.
            if len(item.attention_mask) != len(ids):
                raise ValueError("Encoding.attention_mask and input_ids differ in length")
            keep = [bool(m) for m in item.attention_mask]
            ids = [i for i, k in zip(ids, keep, strict=True) if k]
            if types:
                if len(types) != len(keep):
                    raise ValueError("Encoding.token_type_ids and input_ids differ in length")
                types = [t for t, k in zip(types, keep, strict=True) if k]
        return pb.TokenIds(input_ids=ids, token_type_ids=types)
    if isinstance(item, np.ndarray):
        if item.ndim != 1 or item.dtype.kind not in "iu":
            raise TypeError(f"token ids must be a 1-D int array, got {item.dtype} {item.shape}")
        return pb.TokenIds(input_ids=item.tolist())
    if (
        isinstance(item, Sequence)
        and not isinstance(item, str | bytes)
        and all(isinstance(i, int | np.integer) for i in item)
    ):
        return pb.TokenIds(input_ids=[int(i) for i in item])
    return None


def _text_input(index: int, item: Any) -> pb.TextInput:
    if isinstance(item, str):
        return pb.TextInput(text=item)
    pair = _as_pair(item)
    if pair is None:
        raise TypeError(
            f"inputs[{index}]: expected a text or a (text, text_pair), got {type(item).__name__}"
        )
    return pb.TextInput(pair=pair)


def _model_input(index: int, item: Any) -> pb.ModelInput:
    if isinstance(item, str):
        return pb.ModelInput(text=item)
    pair = _as_pair(item)
    if pair is not None:
        return pb.ModelInput(pair=pair)
    ids = _as_token_ids(item)
    if ids is None:
        raise TypeError(
            f"inputs[{index}]: expected a text, a (text, text_pair), an Encoding or a list of "
            f"token ids, got {type(item).__name__}"
        )
    return pb.ModelInput(ids=ids)


# --- Options ----------------------------------------------------------------------------------


def _choice(name: str, value: Any, table: Mapping[str, Any]) -> Any:
    key = value.lower() if isinstance(value, str) else value
    if key not in table:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, table))}; got {value!r}")
    return table[key]


def _padding(padding: PaddingLike) -> int:
    if padding is True:
        return pb.PADDING_LONGEST
    if padding is False:
        return pb.PADDING_NONE
    return _choice("padding", padding, _PADDING)


def _options(
    *, truncation: bool, max_length: int | None, padding: PaddingLike = "longest"
) -> pb.TokenizeOptions:
    if not isinstance(truncation, bool):
        truncation = _choice("truncation", truncation, _TRUNCATION)
    if max_length is None:
        limit = 0
    elif isinstance(max_length, int) and not isinstance(max_length, bool):
        if not 1 <= max_length <= _UINT32_MAX:
            raise ValueError(f"max_length must be a positive int or None; got {max_length}")
        limit = max_length
    else:
        raise ValueError(f"max_length must be a positive int or None; got {max_length!r}")
    return pb.TokenizeOptions(padding=_padding(padding), truncation=truncation, max_length=limit)


def _names(outputs: Sequence[str]) -> list[str]:
    if isinstance(outputs, str):
        raise TypeError(f"outputs must be a list of names, not a string; use [{outputs!r}]")
    names = list(outputs)
    bad = [name for name in names if not isinstance(name, str) or not name]
    if bad:
        raise ValueError(f"outputs must be non-empty names; got {bad!r}")
    return names


def _output_dtype(dtype: ForwardDType) -> int:
    try:
        # Lets np.float16, "half" and the like through as well as the two names.
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    return _choice("dtype", name, _DTYPE)


def _top_k(top_k: int | None) -> int:
    if top_k is None:
        return -1
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, or None for every label; got {top_k!r}")
    # The server returns every label past their count, so capping keeps the int32 in range.
    return min(top_k, _INT32_MAX)


def _function(function_to_apply: FunctionToApply) -> int:
    if function_to_apply is None:
        return pb.FUNCTION_TO_APPLY_UNSPECIFIED
    return _choice("function_to_apply", function_to_apply, _FUNCTION)


# --- Requests ---------------------------------------------------------------------------------


def tokenize_request(
    inputs: Iterable[TextLike],
    *,
    padding: PaddingLike = "longest",
    truncation: bool = True,
    max_length: int | None = None,
    return_attention_mask: bool = True,
    return_token_type_ids: bool | None = None,
    return_tokens: bool = False,
    return_offsets: bool = False,
) -> pb.TokenizeRequest:
    """Builds a TokenizeRequest; raises TypeError/ValueError for inputs or options it can't send."""
    request = pb.TokenizeRequest(
        inputs=[_text_input(i, item) for i, item in enumerate(_items(inputs, "inputs"))],
        options=_options(truncation=truncation, max_length=max_length, padding=padding),
        return_attention_mask=bool(return_attention_mask),
        return_tokens=bool(return_tokens),
        return_offsets=bool(return_offsets),
    )
    # Unset means "when the model takes them", which no bool can say.
    if return_token_type_ids is not None:
        request.return_token_type_ids = bool(return_token_type_ids)
    return request


def model_inputs(inputs: Iterable[ModelInputLike]) -> list[pb.ModelInput]:
    """Converts Forward/Classify inputs; raises TypeError for a lone string or an unknown kind."""
    return [_model_input(i, item) for i, item in enumerate(_items(inputs, "inputs"))]


def forward_request(
    inputs: Iterable[ModelInputLike],
    *,
    outputs: Sequence[str] = (),
    dtype: ForwardDType = "float32",
    truncation: bool = True,
    max_length: int | None = None,
) -> pb.ForwardRequest:
    """Builds a ForwardRequest; raises TypeError/ValueError for inputs or options it can't send."""
    return pb.ForwardRequest(
        inputs=model_inputs(inputs),
        outputs=_names(outputs),
        output_dtype=_output_dtype(dtype),
        options=_options(truncation=truncation, max_length=max_length),
    )


def classify_options(
    *,
    function_to_apply: FunctionToApply = None,
    top_k: int | None = 1,
    truncation: bool = True,
    max_length: int | None = None,
) -> pb.ClassifyRequest:
    """A ClassifyRequest with the options set and no inputs yet."""
    return pb.ClassifyRequest(
        function_to_apply=_function(function_to_apply),
        top_k=_top_k(top_k),
        options=_options(truncation=truncation, max_length=max_length),
    )


def classify_request(
    inputs: Iterable[ModelInputLike],
    *,
    function_to_apply: FunctionToApply = None,
    top_k: int | None = 1,
    truncation: bool = True,
    max_length: int | None = None,
) -> pb.ClassifyRequest:
    """Builds a ClassifyRequest; raises TypeError/ValueError for inputs or options it can't send."""
    request = classify_options(
        function_to_apply=function_to_apply,
        top_k=top_k,
        truncation=truncation,
        max_length=max_length,
    )
    request.inputs.extend(model_inputs(inputs))
    return request


class ClassifyStreamFeed:
    """Turns (id, inputs) pairs into ClassifyStreamRequests for a stream's request side.

    gRPC consumes the request iterator on its own and, when it raises, only cancels the call, so
    the caller would see CANCELLED instead of their own exception. The feed instead remembers
    the exception and ends the request side; the client raises it after the responses to the
    requests before it, so nothing already sent is lost.
    """

    def __init__(self, template: pb.ClassifyRequest) -> None:
        self._template = template
        self.error: Exception | None = None

    def request(self, item: tuple[str, Iterable[ModelInputLike]]) -> pb.ClassifyStreamRequest:
        """Builds the stream request for one (id, inputs) pair."""
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(f"stream requests must be (id, inputs) pairs; got {item!r}")
        request_id, inputs = item
        if not isinstance(request_id, str):
            raise TypeError(f"a stream request id must be a str; got {type(request_id).__name__}")
        try:
            converted = model_inputs(inputs)
        except (TypeError, ValueError) as error:
            # The stream's position is lost by the time the caller sees this; the id is not.
            raise type(error)(f"stream request {request_id!r}: {error}") from error
        request = pb.ClassifyStreamRequest(id=request_id, request=self._template)
        request.request.inputs.extend(converted)
        return request

    def sync(
        self, requests: Iterable[tuple[str, Iterable[ModelInputLike]]]
    ) -> Iterator[pb.ClassifyStreamRequest]:
        """The requests for a sync call."""
        try:
            for item in requests:
                yield self.request(item)
        except Exception as error:
            self.error = error

    async def aio(
        self,
        requests: Iterable[tuple[str, Iterable[ModelInputLike]]]
        | AsyncIterable[tuple[str, Iterable[ModelInputLike]]],
    ) -> AsyncIterator[pb.ClassifyStreamRequest]:
        """The requests for an asyncio call, from a sync or an async iterable."""
        try:
            if isinstance(requests, AsyncIterable):
                async for item in requests:
                    yield self.request(item)
            else:
                for item in requests:
                    yield self.request(item)
        except Exception as error:
            self.error = error

    def raise_error(self) -> None:
        """Raises the exception that ended the requests, if one did."""
        if self.error is not None:
            raise self.error


# --- Responses --------------------------------------------------------------------------------


def parse_encodings(response: pb.TokenizeResponse) -> list[Encoding]:
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


def parse_forward(response: pb.ForwardResponse) -> ForwardOutput:
    """The outputs as numpy arrays, in the order asked for."""
    return ForwardOutput(
        ((named.name, from_proto(named.tensor)) for named in response.outputs),
        sequence_lengths=np.array(response.sequence_lengths, dtype=np.int64),
    )


def parse_classifications(response: pb.ClassifyResponse) -> list[list[LabelScore]]:
    """Per input, its labels best first."""
    return [
        [LabelScore(label=s.label, score=s.score, index=s.index) for s in result.labels]
        for result in response.results
    ]


def parse_stream_response(response: pb.ClassifyStreamResponse) -> StreamResult:
    """A StreamResult holding either the results or the per-request error."""
    if response.WhichOneof("outcome") == "error":
        return StreamResult(
            id=response.id, error=from_status(response.error.code, response.error.message)
        )
    return StreamResult(id=response.id, results=parse_classifications(response.response))


def parse_model_info(response: pb.ModelInfoResponse) -> ModelInfo:
    """ModelInfoResponse as a dataclass."""
    return ModelInfo(
        model=response.model,
        task=response.task,
        architecture=response.architecture,
        labels=list(response.labels),
        max_length=response.max_length,
        hidden_size=response.hidden_size,
        vocab_size=response.vocab_size,
        outputs=list(response.outputs),
        dtype=response.dtype,
        max_items_per_request=response.max_items_per_request,
        max_tokens_per_request=response.max_tokens_per_request,
        frontend_pid=response.frontend_pid,
        frontends=response.frontends,
        queued_items=response.queued_items,
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
            )
            for w in response.workers
        ],
    )


# --- Channel ----------------------------------------------------------------------------------


def build_channel_options(
    max_message_bytes: int, extra: Sequence[tuple[str, Any]] | None
) -> list[tuple[str, Any]]:
    """Message size limits first, then the caller's options, which win on the same key."""
    if max_message_bytes < 1:
        raise ValueError(f"max_message_bytes must be positive; got {max_message_bytes}")
    options: dict[str, Any] = {
        # gRPC's 4 MiB default receive limit is below one Forward of hidden states.
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.max_send_message_length": max_message_bytes,
    }
    options.update(extra or ())
    return list(options.items())


# Every pipeserve RPC is idempotent, so when the client balances across replicas, a call that
# one replica answers UNAVAILABLE (shutting down, still loading, no live worker) is retried once,
# on the next replica round_robin picks. Once only: a request that kills workers (UNAVAILABLE
# after a worker died twice under it) then reaches one more replica, not all of them.
_RETRY_ONCE: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "pipeserve.v1.Inference"}],
            "retryPolicy": {
                "maxAttempts": 2,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}
# Client-side health checking: round_robin sends calls only to replicas whose health for the
# Inference service is SERVING, so a replica that is loading, has no live worker or is draining
# gets none. The server answers health checks without a token only with --auth-open-health, so
# a client with a token leaves this out (else an UNAUTHENTICATED health check would take every
# replica out of the rotation).
_HEALTH_CHECK: dict[str, Any] = {"healthCheckConfig": {"serviceName": "pipeserve.v1.Inference"}}


def balanced_channel_options(health_check: bool) -> list[tuple[str, Any]]:
    """The channel options of a balanced target: round_robin, one retry, health checking."""
    config = {**_RETRY_ONCE, **(_HEALTH_CHECK if health_check else {})}
    return [("grpc.lb_policy_name", "round_robin"), ("grpc.service_config", json.dumps(config))]


# Target schemes whose name can stand for several servers.
_BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


def _list_address(entry: object) -> tuple[int, str]:
    """(IP version, "host:port") of one entry of a list target."""
    if not isinstance(entry, str):
        raise TypeError(f"target addresses must be strings; got {type(entry).__name__}")
    address = entry.strip()
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"target address {entry!r} is not host:port")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"target address {entry!r}: a list of targets takes IP addresses such as "
            "'10.0.0.1:50051' or '[::1]:50051'; for a host name use 'dns:///name:port'"
        ) from None
    if ip.version == 6 and not bracketed:
        raise ValueError(f"target address {entry!r}: write IPv6 addresses in brackets, [::1]:port")
    return ip.version, address


def build_target(target: str | Sequence[str]) -> tuple[str, bool]:
    """The gRPC target string for `target`, and whether calls are balanced across servers.

    A string is used as is; it is balanced when its scheme can name several servers (dns:,
    ipv4:, ipv6:), e.g. "dns:///pipeserve.ns.svc.cluster.local:50051" for the pods behind a
    headless Service. A list of "ip:port" addresses becomes "ipv4:a:p,b:q" (or "ipv6:" for
    bracketed addresses; one family per list) and is balanced.
    """
    if isinstance(target, str):
        return target, target.startswith(_BALANCED_SCHEMES)
    if not isinstance(target, Sequence):
        raise TypeError(f"target must be a string or a list of strings; got {type(target)}")
    if not target:
        raise ValueError("target is an empty list of addresses")
    parsed = [_list_address(entry) for entry in target]
    versions = {version for version, _ in parsed}
    if len(versions) > 1:
        raise ValueError("a list target takes IPv4 or IPv6 addresses, not both")
    return f"ipv{versions.pop()}:" + ",".join(address for _, address in parsed), True


class ClientSettings:
    """What the sync and async clients share besides conversions: channel options, deadlines.

    `target` becomes the gRPC target (see build_target). A balanced target gets the round_robin
    load-balancing policy, one retry on UNAVAILABLE and, without a token, health checking
    (balanced_channel_options); `channel_options` setting "grpc.lb_policy_name" or
    "grpc.service_config" replaces those.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout: float | None,
        max_message_bytes: int,
        channel_options: Sequence[tuple[str, Any]] | None,
        token: str | None,
        wait_for_ready: bool,
    ) -> None:
        self.target, balanced = build_target(target)
        # Sent with every call; the server compares it with its --auth-token-file tokens.
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        defaults = balanced_channel_options(health_check=token is None) if balanced else []
        self.channel_options = build_channel_options(
            max_message_bytes, [*defaults, *(channel_options or ())]
        )

    def open_channel(self, channels: Any, credentials: grpc.ChannelCredentials | None) -> Any:
        """A channel from `channels`: the grpc or the grpc.aio module, whose factories match."""
        if credentials is None:
            return channels.insecure_channel(self.target, options=self.channel_options)
        return channels.secure_channel(self.target, credentials, options=self.channel_options)

    def call_options(self, timeout: float | None) -> dict[str, Any]:
        """Keyword arguments for one stub call; a call's own timeout beats the default."""
        return {
            "timeout": self.timeout if timeout is None else timeout,
            "wait_for_ready": self.wait_for_ready,
            "metadata": self.metadata,
        }
