"""How whoever asked for a model names its settings, so that a message about a setting points
where they can change it: a flag (`pipeserve serve --task`), a table of the models file
(`[models.NAME] task`), or a field of an Admin LoadModel request, which has no
--allow-missing-weights of its own (it takes the server's)."""

from dataclasses import dataclass
from enum import StrEnum


class Origin(StrEnum):
    FLAGS = "flags"
    MODELS_FILE = "models-file"
    LOAD_MODEL = "load-model"


@dataclass(frozen=True)
class Terms:
    origin: Origin = Origin.FLAGS
    # The model's name: its models file table, or the LoadModel request's name.
    model: str = ""

    def option(self, field: str) -> str:
        """How the asker names the Settings field `field` ("model": where the checkpoint is)."""
        if self.origin is Origin.FLAGS:
            return "--" + field.replace("_", "-")
        key = "path" if field == "model" else field
        if self.origin is Origin.MODELS_FILE:
            return f"[models.{self.model}] {key}"
        return f"LoadModel {self.model}: {key}"

    def setting(self, field: str, value: str) -> str:
        """How the asker sets `field` to `value`."""
        if self.origin is Origin.FLAGS:
            return f"{self.option(field)} {value}"
        key = "path" if field == "model" else field
        if self.origin is Origin.MODELS_FILE:
            return f'{key} = "{value}" in [models.{self.model}]'
        return f"{key} {value} in LoadModel"

    @property
    def allow_missing_weights(self) -> str:
        """How the asker serves a checkpoint that lacks some weights."""
        if self.origin is Origin.MODELS_FILE:
            return f"allow_missing_weights = true in [models.{self.model}]"
        if self.origin is Origin.LOAD_MODEL:
            return "a server started with --allow-missing-weights"
        return "--allow-missing-weights"


def start_up_terms(models_file: bool, model: str) -> Terms:
    """The terms of a model served from start-up: its flags, or its models file table."""
    return Terms(Origin.MODELS_FILE if models_file else Origin.FLAGS, model)


# A model given by flags: the terms of `pipeserve serve` itself.
FLAG_TERMS = Terms()
