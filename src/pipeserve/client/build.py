"""Python arguments -> request protos: the inputs and options the client accepts.

Pure (no I/O): each client method builds its request here (each task RPC's in its module of
tasks/, with the checks here), so the sync and async clients check arguments the same way,
before any call is made.
"""

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np

from pipeserve.client.results import Encoding
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import PADDINGS, SCORE_FUNCTIONS, WINDOW_AGGREGATIONS

_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1

TextPair: TypeAlias = tuple[str, str]
"""(text, text_pair); a two-item list or a {"text", "text_pair"} mapping is accepted too."""

TextLike: TypeAlias = str | TextPair | Mapping[str, str]
"""One Tokenize input: a text or a text pair."""

TokenIdsLike: TypeAlias = Encoding | Sequence[int] | np.ndarray
"""Already tokenized input: an Encoding from tokenize(), a list of ids or a 1-D int array."""

ModelInputLike: TypeAlias = TextLike | TokenIdsLike
"""One Forward or Classify input."""

# The option names are the .proto enums' (pipeserve.wire), which no list here repeats.
PaddingLike: TypeAlias = str | bool
"""A name of wire.PADDINGS ("longest", "max_length", "do_not_pad"), True or False."""
ForwardDType: TypeAlias = Literal["float32", "float16"]
FunctionToApply: TypeAlias = str | None
"""A name of wire.SCORE_FUNCTIONS ("softmax", "sigmoid", "none"); None: the model config's."""
WindowAggregation: TypeAlias = str | None
"""A name of wire.WINDOW_AGGREGATIONS ("mean", "max"), with a stride; None: mean."""

_TRUNCATION = {"longest_first": True, "do_not_truncate": False}
_DTYPE = {"float32": pb.DTYPE_FLOAT32, "float16": pb.DTYPE_FLOAT16}


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


def _sendable(text: str, where: str) -> str:
    """`text`, or ValueError naming `where` when UTF-8 cannot encode it (the wire's strings
    are UTF-8): a lone surrogate, left by decoding bytes that were not UTF-8 with
    errors="surrogateescape" (Python's stdin under a C locale does)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{where}: character {text[error.start]!r} at position {error.start} cannot be "
                "sent (UTF-8 cannot encode it): was the text read from bytes that are not UTF-8?"
            ) from None
    return text


def _as_pair(index: int, item: Any) -> pb.TextPair | None:
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
        return pb.TextPair(
            text=_sendable(item[0], f"inputs[{index}].text"),
            text_pair=_sendable(item[1], f"inputs[{index}].text_pair"),
        )
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
        return pb.TextInput(text=_sendable(item, f"inputs[{index}]"))
    pair = _as_pair(index, item)
    if pair is None:
        raise TypeError(
            f"inputs[{index}]: expected a text or a (text, text_pair), got {type(item).__name__}"
        )
    return pb.TextInput(pair=pair)


def _model_input(index: int, item: Any) -> pb.ModelInput:
    if isinstance(item, str):
        return pb.ModelInput(text=_sendable(item, f"inputs[{index}]"))
    pair = _as_pair(index, item)
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
        return pb.PADDING_DO_NOT_PAD
    return _choice("padding", padding, PADDINGS)


def _options(*, truncation: bool, max_length: int | None) -> pb.TokenizeOptions:
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
    return pb.TokenizeOptions(truncation=truncation, max_length=limit)


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


def _top_k(top_k: int | None) -> dict[str, Any]:
    if top_k is None:
        return {"all_labels": True}
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, or None for every label; got {top_k!r}")
    # The server returns every label past their count, so capping keeps the uint32 in range.
    return {"top_k": min(top_k, _UINT32_MAX)}


def _stride(stride: int | None) -> dict[str, Any]:
    if stride is None:
        return {}
    if not isinstance(stride, int) or isinstance(stride, bool) or not 0 <= stride <= _UINT32_MAX:
        raise ValueError(f"stride must be a non-negative int or None; got {stride!r}")
    return {"stride": stride}


def _windows(stride: int | None, window_aggregation: WindowAggregation) -> dict[str, Any]:
    fields = _stride(stride)
    if window_aggregation is None:
        return fields
    if stride is None:  # the server would refuse it: only windows are aggregated
        raise ValueError("window_aggregation needs a stride: only windows are aggregated")
    aggregation = _choice("window_aggregation", window_aggregation, WINDOW_AGGREGATIONS)
    return {**fields, "window_aggregation": aggregation}


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not a string; use [{values!r}]")
    strings = list(values)
    bad = [value for value in strings if not isinstance(value, str)]
    if bad:
        raise TypeError(f"{what} must be strings; got {bad!r}")
    return strings


def _function(function_to_apply: FunctionToApply) -> int:
    if function_to_apply is None:
        return pb.FUNCTION_TO_APPLY_UNSPECIFIED
    return _choice("function_to_apply", function_to_apply, SCORE_FUNCTIONS)


def _texts(inputs: Iterable[str], what: str) -> list[str]:
    items = _items(inputs, what)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{what}[{index}]: expected a text, got {type(item).__name__}")
        _sendable(item, f"{what}[{index}]")
    return items


def _positive_or_none(name: str, value: int | None) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _INT32_MAX:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    return value


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
    model: str = "",
) -> pb.TokenizeRequest:
    """Builds a TokenizeRequest; raises TypeError/ValueError for inputs or options it can't send."""
    request = pb.TokenizeRequest(
        model=model,
        inputs=[_text_input(i, item) for i, item in enumerate(_items(inputs, "inputs"))],
        options=_options(truncation=truncation, max_length=max_length),
        padding=_padding(padding),
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
    model: str = "",
) -> pb.ForwardRequest:
    """Builds a ForwardRequest; raises TypeError/ValueError for inputs or options it can't send."""
    return pb.ForwardRequest(
        model=model,
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
    stride: int | None = None,
    window_aggregation: WindowAggregation = None,
    model: str = "",
) -> pb.ClassifyRequest:
    """A ClassifyRequest with the options set and no inputs yet."""
    return pb.ClassifyRequest(
        model=model,
        function_to_apply=_function(function_to_apply),
        **_top_k(top_k),
        options=_options(truncation=truncation, max_length=max_length),
        **_windows(stride, window_aggregation),
    )


def classify_request(
    inputs: Iterable[ModelInputLike],
    *,
    function_to_apply: FunctionToApply = None,
    top_k: int | None = 1,
    truncation: bool = True,
    max_length: int | None = None,
    stride: int | None = None,
    window_aggregation: WindowAggregation = None,
    model: str = "",
) -> pb.ClassifyRequest:
    """Builds a ClassifyRequest; raises TypeError/ValueError for inputs or options it can't send."""
    request = classify_options(
        function_to_apply=function_to_apply,
        top_k=top_k,
        truncation=truncation,
        max_length=max_length,
        stride=stride,
        window_aggregation=window_aggregation,
        model=model,
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
            # Not type(error)(...): some ValueErrors (UnicodeError's kin) take other arguments.
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"stream request {request_id!r}: {error}") from error
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
