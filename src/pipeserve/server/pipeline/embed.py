"""Sentence embeddings as sentence-transformers computes them: what a checkpoint declares
(modules.json, 1_Pooling/config.json, sentence_bert_config.json,
config_sentence_transformers.json) and the steps after pooling (Normalize, truncate_dim,
normalize_embeddings).

Pure: no torch, no gRPC. The server reads the files itself, so sentence-transformers is never
a server dependency. Pooling runs in the worker (`pooling.py`, which also names the output
that asks for it).
"""

import json
from dataclasses import dataclass, field

import numpy as np

# The pooling modes Embed serves (sentence-transformers has a few more, refused by name).
POOLING_MODES = ("cls", "mean", "max", "lasttoken")
_LEGACY_MODE_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_MODULE_KINDS = {"Transformer", "Pooling", "Normalize"}
# Where the Transformer module keeps max_seq_length and do_lower_case, newest name first.
_TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
# The prompts every SentenceTransformer has (sentence-transformers 6), empty unless the
# checkpoint fills them: prompt_name="query" on a checkpoint without one means no prompt.
_STANDARD_PROMPTS = {"query": "", "document": ""}


@dataclass(frozen=True)
class SentenceConfig:
    """How a checkpoint turns token states into a sentence embedding."""

    pooling: str = "mean"
    # "modules.json", or "default" for a plain transformers checkpoint (mean pooling).
    source: str = "default"
    include_prompt: bool = True
    normalized: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=lambda: dict(_STANDARD_PROMPTS))
    default_prompt_name: str | None = None
    truncate_dim: int | None = None
    # Why Embed cannot serve this checkpoint exactly (a module or mode not supported), if so.
    unsupported: str | None = None


def read_json(model: str, revision: str | None, filename: str) -> dict | list | None:
    """A JSON file of the checkpoint; None when it has none."""
    from transformers.utils import cached_file  # imports torch: not before a model loads

    path = cached_file(
        model,
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _pooling_mode(config: dict) -> str | tuple[str, ...]:
    """The mode of a Pooling config, old style (pooling_mode_* flags) or new (pooling_mode)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return mode if isinstance(mode, str) else tuple(mode)
    active = tuple(mode for key, mode in _LEGACY_MODE_KEYS.items() if config.get(key))
    return active[0] if len(active) == 1 else active or "mean"


def _transformer_config(model: str, revision: str | None) -> dict:
    """The Transformer module's settings: the first non-empty of the files sentence-transformers
    has saved them in, old names included."""
    for filename in _TRANSFORMER_CONFIGS:
        config = read_json(model, revision, filename)
        if config:
            return dict(config)
    return {}


def load_sentence_config(model: str, revision: str | None) -> SentenceConfig:
    """The checkpoint's sentence-transformers setup; mean pooling without a modules.json."""
    modules = read_json(model, revision, "modules.json")
    if not isinstance(modules, list):
        return SentenceConfig()
    pooling: str | tuple[str, ...] = "mean"
    include_prompt, normalized, unsupported = True, False, None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in _MODULE_KINDS:
            unsupported = f"its modules.json has a {kind} module, which Embed does not run"
        elif kind == "Transformer" and module.get("path", ""):
            unsupported = f"its transformer lives in {module['path']!r}, not the checkpoint root"
        elif kind == "Pooling":
            config = read_json(model, revision, f"{module['path']}/config.json") or {}
            pooling = _pooling_mode(config)
            include_prompt = bool(config.get("include_prompt", True))
        elif kind == "Normalize":
            normalized = True
    if not isinstance(pooling, str) or pooling not in POOLING_MODES:
        unsupported = f"its pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}"
        pooling = "mean"
    bert = _transformer_config(model, revision)
    # Old files name the tokenizer's arguments tokenizer_args; that name wins, as it does there.
    tokenizer_args = bert.get("tokenizer_args", bert.get("processor_kwargs")) or {}
    st = read_json(model, revision, "config_sentence_transformers.json") or {}
    return SentenceConfig(
        pooling=pooling,
        source="modules.json",
        include_prompt=include_prompt,
        normalized=normalized,
        # A model_max_length among the tokenizer's arguments overrides max_seq_length.
        max_seq_length=tokenizer_args.get("model_max_length", bert.get("max_seq_length")),
        do_lower_case=bool(bert.get("do_lower_case", False)),
        prompts={**_STANDARD_PROMPTS, **(st.get("prompts") or {})},
        default_prompt_name=st.get("default_prompt_name"),
        truncate_dim=st.get("truncate_dim"),
        unsupported=unsupported,
    )


def _l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    # torch.nn.functional.normalize(p=2, dim=1): divides by max(norm, 1e-12).
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def finish(
    pooled: np.ndarray, config: SentenceConfig, truncate_dim: int | None, normalize: bool
) -> np.ndarray:
    """The steps after pooling, in encode()'s order: the checkpoint's Normalize module, then
    truncate_dim (Matryoshka), then normalize_embeddings. Float32 throughout."""
    embeddings = pooled.astype(np.float32, copy=False)
    if config.normalized:
        embeddings = _l2_normalize(embeddings)
    if truncate_dim is not None:
        embeddings = embeddings[:, :truncate_dim]
    if normalize:
        embeddings = _l2_normalize(embeddings)
    return np.ascontiguousarray(embeddings, dtype=np.float32)
