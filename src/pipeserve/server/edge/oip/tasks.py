"""What ModelInfer does for each kind of model: a request's tensors and parameters -> the
protocol-free request path of the model's task -> output arrays by name. Labels and scores,
embeddings and raw outputs are tensors; the richer answers of token classification,
fill-mask and zero-shot are one JSON document a row, as MLServer's Hugging Face runtime gives
them (`json_rows`), in the shape of transformers' pipeline outputs."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeserve.server.edge.oip.parameters import Parameters, int_matrix, texts
from pipeserve.server.edge.oip.tensors import Tensor
from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import ScoreFunction
from pipeserve.server.pipeline.classify_tokens import DEFAULT_IGNORE_LABELS, Entity, Strategy
from pipeserve.server.pipeline.fill_mask import DEFAULT_TOP_K, MaskFill
from pipeserve.server.pipeline.inputs import ModelInput, TextOptions, TokenIds
from pipeserve.server.pipeline.windows import WindowAggregation
from pipeserve.server.pipeline.zero_shot import DEFAULT_TEMPLATE
from pipeserve.server.requests.infer import Timings
from pipeserve.server.requests.models import ServedModel


@dataclass(frozen=True)
class Call:
    """One ModelInfer request, read: its inputs, parameters and wanted outputs (none: the
    mapping's own), and its deadline on the event loop's clock."""

    tensors: Mapping[str, Tensor]
    parameters: Parameters
    outputs: tuple[str, ...]
    deadline: float | None


Answer = tuple[dict[str, np.ndarray], Timings]


def json_rows(documents: list[Any]) -> np.ndarray:
    """One UTF-8 JSON document a row: a BYTES [N] output."""
    return np.array([json.dumps(d) for d in documents], dtype=object)


async def classify(model: ServedModel, call: Call) -> Answer:
    p = call.parameters
    rows = texts(call.tensors, "text")
    items: list[ModelInput] = list(rows)
    if "text_pair" in call.tensors:
        items = list(zip(rows, texts(call.tensors, "text_pair", len(rows)), strict=True))
    function = p.choice("function_to_apply", ScoreFunction, None)
    top_k, all_labels = p.integer("top_k"), p.flag("all_labels")
    if all_labels and top_k:
        raise InvalidInput(f"set top_k or all_labels, not both; got top_k {top_k}")
    k = None if all_labels else (top_k or 1)
    stride, options = p.integer("stride"), p.text_options()
    if stride is not None:
        aggregation = p.choice("window_aggregation", WindowAggregation, WindowAggregation.MEAN)
        result = await model.classify.classify_windows(
            items,
            function,
            k,
            stride,
            aggregation,
            options,
            call.deadline,  # type: ignore[arg-type]
        )
    elif p.has("window_aggregation"):
        raise InvalidInput("window_aggregation needs stride: only windows are aggregated")
    else:
        result = await model.classify.classify(items, function, k, options, call.deadline)
    labels = np.array([[s.label for s in row] for row in result.labels], dtype=object)
    scores = np.array([[s.score for s in row] for row in result.labels], dtype=np.float32)
    return {"label": labels, "score": scores}, result.timings


async def rerank(model: ServedModel, call: Call) -> Answer:
    (query,) = texts(call.tensors, "query", 1)
    documents = texts(call.tensors, "text")
    result = await model.rerank.rerank(
        query,
        documents,
        top_n=None,
        raw_scores=call.parameters.flag("raw_scores"),
        options=call.parameters.text_options(),
        deadline=call.deadline,
    )
    # A tensor's rows follow the input's: each document's score in its place, not ranked.
    scores = np.zeros((len(documents), 1), dtype=np.float32)
    for ranked in result.ranked:
        scores[ranked.index, 0] = ranked.score
    return {"score": scores}, result.timings


async def zero_shot(model: ServedModel, call: Call) -> Answer:
    p = call.parameters
    rows = texts(call.tensors, "text")
    result = await model.zero_shot.classify_zero_shot(
        rows,
        p.listed("candidate_labels"),
        template=p.text("hypothesis_template") or DEFAULT_TEMPLATE,
        multi_label=p.flag("multi_label"),
        options=p.text_options(),
        deadline=call.deadline,
    )
    documents = [
        {"sequence": text, "labels": [s.label for s in row], "scores": [s.score for s in row]}
        for text, row in zip(rows, result.labels, strict=True)
    ]
    return {"output": json_rows(documents)}, result.timings


async def embed(model: ServedModel, call: Call) -> Answer:
    p = call.parameters
    result = await model.embedder.embed(
        texts(call.tensors, "text"),
        normalize=p.flag("normalize"),
        truncate_dim=p.integer("truncate_dim"),
        prompt=p.text("prompt"),
        prompt_name=p.text("prompt_name"),
        options=p.text_options(),
        deadline=call.deadline,
    )
    return {"embedding": result.embeddings}, result.timings


def _entity(entity: Entity, strategy: Strategy) -> dict[str, Any]:
    """As the token-classification pipeline words an entity: `entity` and its token's
    `index` without aggregation, `entity_group` with it."""
    found: dict[str, Any] = {"score": entity.score, "word": entity.word}
    if strategy is Strategy.NONE:
        found |= {"entity": entity.label, "index": entity.index}
    else:
        found |= {"entity_group": entity.label}
    return found | {"start": entity.start, "end": entity.end}


async def classify_tokens(model: ServedModel, call: Call) -> Answer:
    p = call.parameters
    strategy = p.choice("aggregation_strategy", Strategy, Strategy.NONE)
    assert strategy is not None
    ignore = p.listed("ignore_labels") if p.has("ignore_labels") else list(DEFAULT_IGNORE_LABELS)
    results, timings = await model.classify_tokens.classify_tokens(
        texts(call.tensors, "text"),
        strategy,
        ignore,
        p.integer("stride"),
        p.text_options(),
        call.deadline,
    )
    documents = [[_entity(e, strategy) for e in result.entities] for result in results]
    return {"output": json_rows(documents)}, timings


def _masks(masks: list[MaskFill]) -> list[Any]:
    """As the fill-mask pipeline answers a text: its candidates, a list of them a mask when
    the text has several."""
    filled = [
        [
            {"score": c.score, "token": c.token, "token_str": c.token_str, "sequence": c.sequence}
            for c in mask.candidates
        ]
        for mask in masks
    ]
    return filled[0] if len(filled) == 1 else filled


async def fill_mask(model: ServedModel, call: Call) -> Answer:
    p = call.parameters
    results, timings = await model.fill_mask.fill_mask(
        texts(call.tensors, "text"),
        p.integer("top_k", DEFAULT_TOP_K),  # type: ignore[arg-type]
        p.listed("targets"),
        p.text_options(),
        call.deadline,
    )
    return {"output": json_rows([_masks(masks) for masks in results])}, timings


def _token_ids(call: Call) -> tuple[list[ModelInput], int]:
    """Each row of input_ids cut to its attention mask (right padding: ones, then zeros), and
    the width of the rows as sent."""
    ids = int_matrix(call.tensors, "input_ids", None)
    mask = np.ones_like(ids)
    if "attention_mask" in call.tensors:
        mask = int_matrix(call.tensors, "attention_mask", ids.shape)
    types = None
    if "token_type_ids" in call.tensors:
        types = int_matrix(call.tensors, "token_type_ids", ids.shape)
    items: list[ModelInput] = []
    for row, row_mask in enumerate(mask):
        length = int(row_mask.sum())
        if not np.array_equal(row_mask, np.arange(len(row_mask)) < length):
            raise InvalidInput(
                f"attention_mask row {row} is not ones then zeros: pad on the right, as "
                "the model is called on each row's tokens alone"
            )
        items.append(TokenIds(ids[row, :length], None if types is None else types[row, :length]))
    return items, ids.shape[1]


async def forward(model: ServedModel, call: Call) -> Answer:
    """The model's named outputs for raw token ids (this protocol's Forward); per-token
    outputs zero-padded back to the width of input_ids."""
    items, width = _token_ids(call)
    result = await model.infer.forward(items, call.outputs, TextOptions(), call.deadline)
    token_level = model.engine.model.token_level
    outputs = {}
    for name, array in result.outputs.items():
        if name in token_level:
            padding = [(0, 0)] * array.ndim
            padding[1] = (0, width - array.shape[1])
            array = np.pad(array, padding)
        outputs[name] = array
    return outputs, result.timings
