"""Python arguments -> request protos for the task RPCs: ClassifyTokens, FillMask, Embed,
Rerank and ClassifyZeroShot. Pure (no I/O), checked as build.py checks the core RPCs'.
"""

from collections.abc import Iterable
from typing import TypeAlias

from pipeserve.client.build import (
    _INT32_MAX,
    _UINT32_MAX,
    ForwardDType,
    _choice,
    _items,
    _options,
    _output_dtype,
    _stride,
    _strings,
)
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import AGGREGATION_STRATEGIES

AggregationStrategy: TypeAlias = str
"""A name of wire.AGGREGATION_STRATEGIES ("none", "simple", "first", "average", "max")."""


def _texts(inputs: Iterable[str], what: str) -> list[str]:
    items = _items(inputs, what)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{what}[{index}]: expected a text, got {type(item).__name__}")
    return items


def _positive_or_none(name: str, value: int | None) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _INT32_MAX:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    return value


def classify_tokens_request(
    inputs: Iterable[str],
    *,
    aggregation_strategy: AggregationStrategy = "none",
    ignore_labels: Iterable[str] | None = None,
    stride: int | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.ClassifyTokensRequest:
    """Builds a ClassifyTokensRequest; raises TypeError/ValueError for inputs or options it
    can't send."""
    request = pb.ClassifyTokensRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        aggregation_strategy=_choice(
            "aggregation_strategy", aggregation_strategy, AGGREGATION_STRATEGIES
        ),
        **_stride(stride),
        options=_options(truncation=truncation, max_length=max_length),
    )
    if ignore_labels is not None:  # unset means the pipeline's ["O"], which [] must not
        request.ignore_labels.SetInParent()
        request.ignore_labels.labels.extend(_strings(ignore_labels, "ignore_labels"))
    return request


def fill_mask_request(
    inputs: Iterable[str],
    *,
    top_k: int = 5,
    targets: Iterable[str] | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.FillMaskRequest:
    """Builds a FillMaskRequest; raises TypeError/ValueError for inputs or options it can't
    send."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= _UINT32_MAX:
        raise ValueError(f"top_k must be a positive int; got {top_k!r}")
    return pb.FillMaskRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        top_k=top_k,
        targets=_strings(targets or (), "targets"),
        options=_options(truncation=truncation, max_length=max_length),
    )


def embed_request(
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
) -> pb.EmbedRequest:
    """Builds an EmbedRequest; raises TypeError/ValueError for inputs or options it can't send.
    `prompt` None applies the checkpoint's default prompt, "" none at all."""
    if prompt is not None and prompt_name is not None:
        raise ValueError("give prompt or prompt_name, not both")
    request = pb.EmbedRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        normalize=bool(normalize),
        truncate_dim=_positive_or_none("truncate_dim", truncate_dim),
        output_dtype=_output_dtype(dtype),
        options=_options(truncation=truncation, max_length=max_length),
        prompt_name=prompt_name or "",
    )
    if prompt is not None:  # set, even empty: unset is what asks for the default
        request.prompt = prompt
    return request


def rerank_request(
    query: str,
    documents: Iterable[str],
    *,
    top_n: int | None = None,
    return_documents: bool = False,
    raw_scores: bool = False,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.RerankRequest:
    """Builds a RerankRequest; raises TypeError/ValueError for inputs or options it can't send."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a text, got {type(query).__name__}")
    return pb.RerankRequest(
        model=model,
        query=query,
        documents=_texts(documents, "documents"),
        top_n=_positive_or_none("top_n", top_n),
        return_documents=bool(return_documents),
        raw_scores=bool(raw_scores),
        options=_options(truncation=truncation, max_length=max_length),
    )


def classify_zero_shot_request(
    inputs: Iterable[str],
    candidate_labels: Iterable[str],
    *,
    hypothesis_template: str | None = None,
    multi_label: bool = False,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.ClassifyZeroShotRequest:
    """Builds a ClassifyZeroShotRequest; raises TypeError/ValueError for inputs or options it
    can't send. `candidate_labels` may also be one "a, b, c" string, as the pipeline takes it."""
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        candidate_labels = [label for label in candidate_labels if label]
    return pb.ClassifyZeroShotRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        candidate_labels=_texts(candidate_labels, "candidate_labels"),
        hypothesis_template=hypothesis_template or "",
        multi_label=bool(multi_label),
        options=_options(truncation=truncation, max_length=max_length),
    )
