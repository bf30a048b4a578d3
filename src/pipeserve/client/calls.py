"""The core unary calls of the Inference service, once each: its Python arguments (signature,
defaults, docstring), the request they build and how its response is read. Client and
AsyncClient bind each as a method (`bind.blocking`, `bind.awaitable`), so the two clients
cannot drift apart. The task RPCs' calls are in tasks/, a module each.
"""

from collections.abc import Iterable, Sequence

from pipeserve.client import build, parse, split
from pipeserve.client.bind import Call
from pipeserve.client.build import (
    ForwardDType,
    FunctionToApply,
    ModelInputLike,
    PaddingLike,
    TextLike,
    WindowAggregation,
)
from pipeserve.client.results import (
    Encoding,
    ForwardOutput,
    LabelScore,
    ModelInfo,
    ServedModel,
    Windowed,
)
from pipeserve.client.split import Split
from pipeserve.v1 import pipeserve_pb2 as pb


def tokenize(
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
) -> Call[list[Encoding]]:
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
    return Call("Tokenize", request, parse.encodings, timeout, split.tokenize_split(request))


def forward(
    inputs: Iterable[ModelInputLike],
    *,
    outputs: Sequence[str] = (),
    dtype: ForwardDType = "float32",
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[ForwardOutput]:
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
    parts = Split("inputs", split.forward_outputs, split.token_bound(request))
    return Call("Forward", request, parse.forward_output, timeout, parts)


def classify(
    inputs: Iterable[ModelInputLike],
    *,
    function_to_apply: FunctionToApply = None,
    top_k: int | None = 1,
    truncation: bool = True,
    max_length: int | None = None,
    stride: int | None = None,
    window_aggregation: WindowAggregation = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[Windowed[LabelScore]]]:
    """Classifies each input (as forward() takes them); per input, its labels best first.

    `function_to_apply` is "softmax", "sigmoid", "none" (raw logits) or None for the model
    config's choice. `top_k` is how many labels per input; None means all of them. The result
    is always a list per input, whatever `top_k`.

    `stride` (an int) classifies a text longer than `max_length` (default: the model's) by
    windows overlapping by `stride` tokens, whose scores are combined by their "mean"
    (default) or their "max" (`window_aggregation`, only with `stride`); each result's
    `windows` says how many there were.
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
    parts = Split("inputs", split.concatenated, split.token_bound(request))
    return Call("Classify", request, parse.classifications, timeout, parts)


def model_info(
    timeout: float | None = None,
    *,
    model: str = "",
) -> Call[ModelInfo]:
    """Describes a served model (default: the server's default model), the server's
    limits and its workers."""
    return Call("ModelInfo", pb.ModelInfoRequest(model=model), parse.model_info, timeout)


def list_models(
    timeout: float | None = None,
) -> Call[list[ServedModel]]:
    """The models the server serves; each method's `model=` takes one of their names."""
    return Call("ListModels", pb.ListModelsRequest(), parse.served_models, timeout)
