"""The models file (`--models-file models.toml`): which models a server serves, under which
names, and each one's own settings. Read here into plain values; `settings.Settings` validates
them, so a models file and the flags are checked by the same rules."""

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What a model's table in the models file may set, besides `path` and `default`.
MODEL_FILE_KEYS = (
    "revision",
    "task",
    "devices",
    "workers_per_device",
    "dtype",
    "quantize",
    "backend",
    "torch_compile",
    "calibration_file",
    "allow_missing_weights",
    "max_batch_tokens",
    "max_batch_size",
    "max_wait_ms",
    "max_items_per_request",
    "max_text_chars",
    "max_tokens_per_request",
    "max_queued_items",
    "max_candidate_labels",
    "max_targets",
    "max_template_chars",
    "forward_timeout_s",
)


@dataclass(frozen=True)
class ModelsFile:
    # --model values, NAME=PATH
    model: tuple[str, ...]
    default: str | None
    # Per model name, the settings its table gives.
    options: dict[str, dict[str, Any]]


def read_models_file(path: Path) -> ModelsFile:
    """The models a models file gives, the default one, and each one's settings.

    Each `[models.NAME]` table needs `path` (a folder or hub id) and may set MODEL_FILE_KEYS;
    `default = true` marks the model that requests naming none go to."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"--models-file {path}: {error}") from error
    tables = document.get("models")
    unknown = set(document) - {"models"}
    if unknown or not isinstance(tables, dict) or not tables:
        raise ValueError(f"--models-file {path}: give one [models.NAME] table per model")
    entries, options, defaults = [], {}, []
    for name, table in tables.items():
        where = f"--models-file {path}: [models.{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("path"), str):
            raise ValueError(f'{where} needs path = "FOLDER_OR_HUB_ID"')
        wrong = set(table) - {"path", "default", *MODEL_FILE_KEYS}
        if wrong:
            raise ValueError(
                f"{where}: unknown key {sorted(wrong)[0]!r}; known: path, default, "
                + ", ".join(MODEL_FILE_KEYS)
            )
        if table.get("default"):
            defaults.append(name)
        entries.append(f"{name}={table['path']}")
        options[name] = {k: v for k, v in table.items() if k in MODEL_FILE_KEYS}
    if len(defaults) > 1:
        raise ValueError(f"--models-file {path}: default = true on {', '.join(defaults)}")
    return ModelsFile(tuple(entries), defaults[0] if defaults else None, options)
