"""Every unary call of the Inference service, once: its Python arguments (signature, defaults,
docstring), the request they build and how its response is read. Client and AsyncClient bind
each as a method (`bind.blocking`, `bind.awaitable`), so the two clients cannot drift apart,
and a new RPC is one function here and one line in each client.
"""

import functools
from collections.abc import Iterable, Sequence

import numpy as np

from pipeserve.client import build, build_tasks, parse
from pipeserve.client.bind import Call
from pipeserve.client.build import (
    ForwardDType,
    FunctionToApply,
    ModelInputLike,
    PaddingLike,
    TextLike,
    WindowAggregation,
)
from pipeserve.client.build_tasks import AggregationStrategy
from pipeserve.client.results import (
    Encoding,
    Entity,
    ForwardOutput,
    LabelScore,
    MaskFill,
    ModelInfo,
    RankedDocument,
    ServedModel,
    Windowed,
)
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
    return Call(
        "Tokenize",
        build.tokenize_request(
            inputs,
            model=model,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=return_attention_mask,
            return_token_type_ids=return_token_type_ids,
            return_tokens=return_tokens,
            return_offsets=return_offsets,
        ),
        parse.encodings,
        timeout,
    )


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
    return Call(
        "Forward",
        build.forward_request(
            inputs,
            model=model,
            outputs=outputs,
            dtype=dtype,
            truncation=truncation,
            max_length=max_length,
        ),
        parse.forward_output,
        timeout,
    )


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
    return Call(
        "Classify",
        build.classify_request(
            inputs,
            model=model,
            function_to_apply=function_to_apply,
            top_k=top_k,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            window_aggregation=window_aggregation,
        ),
        parse.classifications,
        timeout,
    )


def classify_tokens(
    inputs: Iterable[str],
    *,
    aggregation_strategy: AggregationStrategy = "none",
    ignore_labels: Iterable[str] | None = None,
    stride: int | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[Windowed[Entity]]]:
    """Labels each token of the texts with a token-classification model (NER, POS), as
    transformers' pipeline("token-classification", aggregation_strategy=...).

    `aggregation_strategy` is "none" (one Entity per token, with its index), "simple",
    "first", "average" or "max" (tokens grouped into entities). Entities labelled one of
    `ignore_labels` (default ["O"]) are left out. `stride` labels a text longer than
    `max_length` whole, by windows overlapping by `stride` tokens (needs a strategy other
    than "none"). Returns per text its entities in text order; `text[e.start:e.end]` is the
    entity as written, and each list's `windows` how many windows it took.
    """
    return Call(
        "ClassifyTokens",
        build_tasks.classify_tokens_request(
            inputs,
            model=model,
            aggregation_strategy=aggregation_strategy,
            ignore_labels=ignore_labels,
            stride=stride,
            truncation=truncation,
            max_length=max_length,
        ),
        parse.token_classifications,
        timeout,
    )


def fill_mask(
    inputs: Iterable[str],
    *,
    top_k: int = 5,
    targets: Iterable[str] | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[list[MaskFill]]]:
    """Fills in each mask token (ModelInfo.mask_token, e.g. "[MASK]") of the texts with a
    masked language model, as transformers' pipeline("fill-mask").

    Returns per text, per mask in text order, its `top_k` best candidates (`targets`: only
    among these tokens). Each text needs at least one mask token.
    """
    return Call(
        "FillMask",
        build_tasks.fill_mask_request(
            inputs,
            model=model,
            top_k=top_k,
            targets=targets,
            truncation=truncation,
            max_length=max_length,
        ),
        parse.mask_fills,
        timeout,
    )


def model_info(
    timeout: float | None = None,
    *,
    model: str = "",
) -> Call[ModelInfo]:
    """Describes a served model (default: the server's default model), the server's
    limits and its workers."""
    return Call("ModelInfo", pb.ModelInfoRequest(model=model), parse.model_info, timeout)


def embed(
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
) -> Call[np.ndarray]:
    """Sentence embeddings of `inputs`, as SentenceTransformer(model).encode() gives them.

    Returns an [inputs, dimension] numpy array (float32, or float16 with dtype="float16").
    The server pools as the checkpoint's modules.json says (mean pooling without one) and
    applies its Normalize module. `normalize` L2-normalises each row after `truncate_dim`
    (keep the first dimensions, for Matryoshka models). `prompt` is put before every text
    ("" for none at all); `prompt_name` picks one of the checkpoint's prompts
    (ModelInfo.embedding.prompts; "query" and "document" are always there, maybe empty).
    With neither, the checkpoint's default prompt applies, as in encode().
    `max_length` None means the checkpoint's max_seq_length.
    """
    return Call(
        "Embed",
        build_tasks.embed_request(
            inputs,
            normalize=normalize,
            truncate_dim=truncate_dim,
            dtype=dtype,
            prompt=prompt,
            prompt_name=prompt_name,
            truncation=truncation,
            max_length=max_length,
            model=model,
        ),
        parse.embeddings,
        timeout,
    )


def rerank(
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
) -> Call[list[RankedDocument]]:
    """Ranks `documents` by relevance to `query` with a cross-encoder, best first, as
    CrossEncoder(model).rank(query, documents) does.

    Scores are the model's activation of its one logit (sigmoid unless the checkpoint saved
    another), or the raw logit with `raw_scores`. `top_n` None returns every document;
    `return_documents` puts each document's text in its result.
    """
    return Call(
        "Rerank",
        build_tasks.rerank_request(
            query,
            documents,
            top_n=top_n,
            return_documents=return_documents,
            raw_scores=raw_scores,
            truncation=truncation,
            max_length=max_length,
            model=model,
        ),
        functools.partial(parse.ranked_documents, with_text=return_documents),
        timeout,
    )


def classify_zero_shot(
    inputs: Iterable[str],
    candidate_labels: Iterable[str],
    *,
    hypothesis_template: str | None = None,
    multi_label: bool = False,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[list[LabelScore]]]:
    """Zero-shot classification of each input against `candidate_labels` with an NLI
    model, as transformers' pipeline("zero-shot-classification").

    Per input, every label best first (LabelScore.index is its place in
    candidate_labels). `hypothesis_template` (default "This example is {}.") must hold
    {} where the label goes; `multi_label` scores each label on its own.
    """
    return Call(
        "ClassifyZeroShot",
        build_tasks.classify_zero_shot_request(
            inputs,
            candidate_labels,
            hypothesis_template=hypothesis_template,
            multi_label=multi_label,
            truncation=truncation,
            max_length=max_length,
            model=model,
        ),
        parse.classifications,
        timeout,
    )


def list_models(
    timeout: float | None = None,
) -> Call[list[ServedModel]]:
    """The models the server serves; each method's `model=` takes one of their names."""
    return Call("ListModels", pb.ListModelsRequest(), parse.served_models, timeout)
