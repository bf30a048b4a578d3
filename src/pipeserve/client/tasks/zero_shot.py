"""ClassifyZeroShot from the client: its call (arguments and docstring) and the request they
build; its response reads as Classify's does.
Pure (no I/O); `tasks/__init__.py` binds the call as a method of Client and AsyncClient.
"""

from collections.abc import Callable, Iterable

from pipeserve.client import parse
from pipeserve.client.bind import Call
from pipeserve.client.build import _options, _texts
from pipeserve.client.results import LabelScore, ModelInfo
from pipeserve.client.split import Split, concatenated, text_tokens, token_bound
from pipeserve.v1 import pipeserve_pb2 as pb

_DEFAULT_TEMPLATE = "This example is {}."


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
    request = classify_zero_shot_request(
        inputs,
        candidate_labels,
        hypothesis_template=hypothesis_template,
        multi_label=multi_label,
        truncation=truncation,
        max_length=max_length,
        model=model,
    )
    parts = Split("inputs", concatenated, _pairs_tokens(request))
    return Call("ClassifyZeroShot", request, parse.classifications, timeout, parts)


def _pairs_tokens(request: pb.ClassifyZeroShotRequest) -> Callable[[str, ModelInfo], int]:
    """A text's tokens at most: those of its pairs with every label's hypothesis."""
    template = text_tokens(request.hypothesis_template or _DEFAULT_TEMPLATE)
    hypotheses = [text_tokens(label) + template for label in request.candidate_labels]
    pair = token_bound(request)
    return lambda text, info: sum(pair(text, info) + tokens for tokens in hypotheses)
