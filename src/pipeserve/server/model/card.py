"""What the server process knows of the model without loading its weights: the config
and the tokenizer. Used for validation, ModelInfo, postprocessing and start-up checks."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeserve.server.errors import ModelLoadError
from pipeserve.server.logs import route_transformers_logs
from pipeserve.server.pipeline.classify import ScoreFunction, default_score_function
from pipeserve.server.pipeline.embed import read_json
from pipeserve.server.pipeline.rerank import saved_activation
from pipeserve.server.pipeline.tokenize import TextTokenizer
from pipeserve.server.pipeline.zero_shot import entailment_id
from pipeserve.server.settings import Settings, Task, task_of_architecture

if TYPE_CHECKING:  # transformers imports torch: loaded with the first model, not before
    from transformers import PretrainedConfig


def resolve_task(config: "PretrainedConfig", requested: Task) -> Task:
    """The head to load: the one asked for, else the first the config declares."""
    if requested is not Task.AUTO:
        return requested
    for architecture in config.architectures or []:
        if (task := task_of_architecture(architecture)) is not None:
            return task
    return Task.FEATURE_EXTRACTION


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: Task
    id2label: dict[int, str]
    max_length: int
    hidden_size: int
    vocab_size: int
    type_vocab_size: int
    score_function: ScoreFunction
    tokenizer: TextTokenizer
    # A sequence classifier's CrossEncoder activation as its checkpoint saved it
    # (rerank.saved_activation; None: CrossEncoder's default), for Rerank.
    cross_encoder_activation: str | None = None
    # A sequence classifier's entailment class (zero_shot.entailment_id), for ClassifyZeroShot.
    entailment_id: int | None = None

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]


def position_limit(config: "PretrainedConfig") -> int:
    """Most tokens the model's position embeddings take. RoBERTa's family (XLM-R, MPNet,
    CamemBERT...) numbers positions from padding_idx + 1, so its table holds that many fewer
    than max_position_embeddings; found as sentence-transformers finds that offset, by an
    embeddings module with an int padding_idx beside a learned position table (the model built
    on the meta device: no weights, no memory)."""
    import torch
    from transformers import AutoModel

    declared = int(getattr(config, "max_position_embeddings", 0) or 512)
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception:  # an architecture AutoModel cannot build: its config's word stands
        return declared
    for module in model.modules():
        padding_idx = getattr(module, "padding_idx", None)
        table = getattr(module, "position_embeddings", None)
        if isinstance(padding_idx, int) and isinstance(table, torch.nn.Embedding):
            return min(declared, table.num_embeddings - padding_idx - 1)
    return declared


def _cross_encoder_activation(config: "PretrainedConfig", settings: Settings) -> str | None:
    source, revision = settings.model_source, settings.revision
    # CrossEncoder reads config_sentence_transformers.json only from a checkpoint it saved
    # (one with a modules.json).
    saved = read_json(source, revision, "modules.json") is not None
    model_config = read_json(source, revision, "config_sentence_transformers.json") if saved else {}
    return saved_activation(
        model_config if isinstance(model_config, dict) else None,
        getattr(config, "sentence_transformers", None),
        getattr(config, "sbert_ce_default_activation_function", None),
    )


def load_model_card(settings: Settings) -> ModelCard:
    """Loads config and tokenizer of `settings`' (first) model; any failure becomes one
    ModelLoadError line."""
    route_transformers_logs()  # the first import of transformers, in the server and front ends
    from transformers import AutoConfig

    source = settings.model_source
    try:
        config = AutoConfig.from_pretrained(source, revision=settings.revision)
        tokenizer = TextTokenizer.load(source, settings.revision, position_limit(config))
    except Exception as exc:  # any loader failure means the same thing to the operator
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load model {source!r}: {reason}") from exc
    task = resolve_task(config, settings.task)
    id2label = {int(k): v for k, v in (config.id2label or {}).items()}
    if task not in (Task.TEXT_CLASSIFICATION, Task.TOKEN_CLASSIFICATION):
        id2label = {}
    pairs: dict = {}
    if task is Task.TEXT_CLASSIFICATION:
        pairs = {
            "cross_encoder_activation": _cross_encoder_activation(config, settings),
            "entailment_id": entailment_id(config.label2id or {}),
        }
    return ModelCard(
        name=source,
        task=task,
        id2label=id2label,
        max_length=tokenizer.max_length,
        hidden_size=int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0)),
        vocab_size=int(config.vocab_size),
        type_vocab_size=int(getattr(config, "type_vocab_size", 0) or 1),
        score_function=default_score_function(
            config.problem_type, len(id2label), getattr(config, "function_to_apply", None)
        ),
        tokenizer=tokenizer,
        **pairs,
    )
