"""Which mapping of tensors a ModelInfer request gets, and what each takes and answers (the
model metadata and config render these). The served model's task decides what text input
means: the mappings of the RPCs it serves (`model/served.py`). Raw INT64 `input_ids` mean
Forward for every model; a `query` input means Rerank and a `candidate_labels` parameter
ClassifyZeroShot, for the classifiers that serve them."""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pipeserve.server.edge.oip import tasks
from pipeserve.server.edge.oip.parameters import Parameters
from pipeserve.server.edge.oip.tensors import Tensor
from pipeserve.server.errors import InvalidInput, UnsupportedByModel
from pipeserve.server.model.served import served_rpcs
from pipeserve.server.requests.models import ServedModel

# A size that varies from call to call, as the protocol writes it.
ANY = -1


@dataclass(frozen=True)
class Spec:
    """A tensor a mapping takes or gives: name, datatype and shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class TaskMapping:
    """How ModelInfer serves one RPC of pipeserve.v1: the tensors it takes and gives, its
    parameters, and what selects it over the model's plain text mapping (an input or a
    parameter; None: the plain one)."""

    rpc: str
    inputs: tuple[Spec, ...]
    outputs: Callable[[ServedModel], tuple[Spec, ...]]
    parameters: tuple[str, ...]
    selected_by: str | None
    run: Callable[[ServedModel, tasks.Call], Awaitable[tasks.Answer]]


_TEXT = Spec("text", "BYTES", (ANY,))
# How texts become ids, taken by every mapping of text.
TEXT_PARAMETERS = ("truncation", "max_length")
_JSON = Spec("output", "BYTES", (ANY,))


def _fixed(*outputs: Spec) -> Callable[[ServedModel], tuple[Spec, ...]]:
    return lambda _model: outputs


def _embedding(model: ServedModel) -> tuple[Spec, ...]:
    return (Spec("embedding", "FP32", (ANY, model.card.hidden_size)),)


def _raw_outputs(model: ServedModel) -> tuple[Spec, ...]:
    """The model's outputs, per-token ones [N, L, ...] (L as input_ids), others [N, ...]."""
    ready = model.engine.model
    return tuple(
        Spec(
            name,
            "FP32",
            (ANY, *((ANY,) if name in ready.token_level else ()), *ready.item_shapes[name]),
        )
        for name in ready.outputs
    )


_MAPPINGS = (
    TaskMapping(
        "Forward",
        (
            Spec("input_ids", "INT64", (ANY, ANY)),
            Spec("attention_mask", "INT64", (ANY, ANY), optional=True),
            Spec("token_type_ids", "INT64", (ANY, ANY), optional=True),
        ),
        _raw_outputs,
        (),
        "input_ids",
        tasks.forward,
    ),
    TaskMapping(
        "Rerank",
        (Spec("query", "BYTES", (1,)), _TEXT),
        _fixed(Spec("score", "FP32", (ANY, 1))),
        ("raw_scores", *TEXT_PARAMETERS),
        "query",
        tasks.rerank,
    ),
    TaskMapping(
        "ClassifyZeroShot",
        (_TEXT,),
        _fixed(_JSON),
        ("candidate_labels", "hypothesis_template", "multi_label", *TEXT_PARAMETERS),
        "candidate_labels",
        tasks.zero_shot,
    ),
    TaskMapping(
        "Classify",
        (_TEXT, Spec("text_pair", "BYTES", (ANY,), optional=True)),
        _fixed(Spec("label", "BYTES", (ANY, ANY)), Spec("score", "FP32", (ANY, ANY))),
        (
            "function_to_apply",
            "top_k",
            "all_labels",
            "stride",
            "window_aggregation",
            *TEXT_PARAMETERS,
        ),
        None,
        tasks.classify,
    ),
    TaskMapping(
        "Embed",
        (_TEXT,),
        _embedding,
        ("normalize", "truncate_dim", "prompt", "prompt_name", *TEXT_PARAMETERS),
        None,
        tasks.embed,
    ),
    TaskMapping(
        "ClassifyTokens",
        (_TEXT,),
        _fixed(_JSON),
        ("aggregation_strategy", "ignore_labels", "stride", *TEXT_PARAMETERS),
        None,
        tasks.classify_tokens,
    ),
    TaskMapping(
        "FillMask",
        (_TEXT,),
        _fixed(_JSON),
        ("top_k", "targets", *TEXT_PARAMETERS),
        None,
        tasks.fill_mask,
    ),
)


def served_mappings(model: ServedModel) -> list[TaskMapping]:
    """The mappings of the RPCs `model` serves, those selected by an input or parameter
    first."""
    rpcs = set(served_rpcs(model.card))
    return [m for m in _MAPPINGS if m.rpc in rpcs]


def choose(
    model: ServedModel, tensors: Mapping[str, Tensor], parameters: Parameters
) -> TaskMapping:
    """The mapping a request gets, its inputs and parameters checked against it."""
    found = None
    for mapping in served_mappings(model):
        chosen = mapping.selected_by
        if chosen is None or chosen in tensors or parameters.has(chosen):
            found = mapping
            break
    if found is None:
        raise UnsupportedByModel(
            f"{model.name} ({model.card.task}) takes raw INT64 input_ids only, not text"
        )
    names = {spec.name for spec in found.inputs}
    unknown = sorted(set(tensors) - names)
    missing = [s.name for s in found.inputs if not s.optional and s.name not in tensors]
    if unknown or missing:
        raise InvalidInput(
            f"{model.name} answers these inputs as {found.rpc}, which takes "
            f"{', '.join(sorted(names))}: unknown {unknown}, missing {missing}"
        )
    parameters.only(found.parameters)
    return found


def _merged(specs: list[Spec]) -> tuple[Spec, ...]:
    """`specs` once a name; where two mappings give one name different shapes (a
    cross-encoder's score: [N, 1] ranked, [N, K] classified), the sizes they differ in ANY."""
    by_name: dict[str, Spec] = {}
    for spec in specs:
        seen = by_name.setdefault(spec.name, spec)
        if seen.shape != spec.shape:
            sizes = zip(seen.shape, spec.shape, strict=False)
            shape = tuple(a if a == b else ANY for a, b in sizes)
            by_name[spec.name] = Spec(spec.name, spec.datatype, shape, seen.optional)
    return tuple(by_name.values())


def model_tensors(model: ServedModel) -> tuple[tuple[Spec, ...], tuple[Spec, ...]]:
    """Every input and output of `model`'s mappings: what its metadata lists."""
    mappings = served_mappings(model)
    inputs = _merged([s for m in mappings for s in m.inputs])
    return inputs, _merged([s for m in mappings for s in m.outputs(model)])
