"""The server's one settings object, fed by CLI flags and PIPESERVE_* environment variables.

Precedence: a flag on the command line, then the environment variable, then the default.
Settings are read once in `main` and passed explicitly, also to worker processes as they start.
"""

import argparse
import os
import re
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipeserve.server.models_file import read_models_file
from pipeserve.server.terms import Origin, Terms

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
# Names travel in requests, health service names, metric labels and messages: keep them
# plain and short.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_model_name(name: str) -> bool:
    """Whether `name` may name a served model."""
    return _NAME.fullmatch(name) is not None


def split_model(entry: str) -> tuple[str, str]:
    """(name, source) of a --model value: NAME=SOURCE, or a bare SOURCE named after its last
    part (a folder's name, a hub id's model part)."""
    name, sep, source = entry.partition("=")
    if sep and _NAME.fullmatch(name):
        return name, source
    return PurePosixPath(entry.rstrip("/")).name, entry


class Task(StrEnum):
    AUTO = "auto"
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_CLASSIFICATION = "text-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    FILL_MASK = "fill-mask"


# The head each task loads, by how its architectures' names end (BertForMaskedLM...); a bare
# encoder (feature-extraction) is any other architecture.
HEAD_SUFFIX = {
    Task.TEXT_CLASSIFICATION: "ForSequenceClassification",
    Task.TOKEN_CLASSIFICATION: "ForTokenClassification",
    Task.FILL_MASK: "ForMaskedLM",
}
# Heads of checkpoints that no RPC serves, by the same suffix -> what they do.
UNSERVED_HEADS = {"ForQuestionAnswering": "question answering"}


def task_of_architecture(architecture: str) -> Task | None:
    """The task whose head `architecture` is, or None for another architecture."""
    for task, suffix in HEAD_SUFFIX.items():
        if architecture.endswith(suffix):
            return task
    return None


class DType(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Quantize(StrEnum):
    NONE = "none"
    # torch: dynamic int8 linear layers; openvino: int8 weights, float activations.
    INT8 = "int8"
    # openvino only: int8 weights and activations, calibrated on --calibration-file.
    INT8_STATIC = "int8-static"


class Backend(StrEnum):
    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIPESERVE_", frozen=True)

    model: Annotated[tuple[str, ...], NoDecode] = Field(
        (DEFAULT_MODEL,),
        description="Model to serve: NAME=PATH_OR_HUB_ID, or a bare hub name or checkpoint "
        "folder, named after its last part. Repeat the flag to serve several models (in the "
        "environment, separate them with commas).",
    )
    default_model: str | None = Field(
        None,
        description="Name of the model that requests naming none go to; unset: the first.",
    )
    models_file: Path | None = Field(
        None,
        description="TOML file of the models to serve, each with its own path, revision, task, "
        "devices, workers per device, dtype, quantize and limits (see README); replaces "
        "--model.",
    )
    # Per served model, the settings the models file gives it ({name: {field: value}}).
    _model_options: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    task: Task = Field(
        Task.AUTO,
        description="Model head; auto picks it from the config's architectures (a bare "
        "encoder, feature-extraction, when they name none of the heads).",
    )
    host: str = Field(
        "127.0.0.1",
        description="Address to bind. Use 0.0.0.0 to serve on all interfaces.",
    )
    port: int = Field(50051, ge=0, le=65535, description="Port to bind; 0 picks a free one.")
    devices: str = Field(
        "auto",
        description="auto (every visible GPU, else CPU), cpu, or GPU indices such as 0,1.",
    )
    workers_per_device: int = Field(
        0,
        ge=0,
        description="Worker processes per device; 0 (auto): 1 per GPU, and on CPU 2 (each on "
        "half the cores) for a model that has the cores to itself, else 1.",
    )
    allow_missing_weights: bool = Field(
        False,
        description="Serve a checkpoint that lacks weights of the model it is loaded as (say, "
        "the --task head), which are then random. Without it such a checkpoint is refused.",
    )
    frontends: int = Field(
        0,
        ge=0,
        description="gRPC front-end processes serving the port (SO_REUSEPORT) and feeding the "
        "same workers. 0 picks: 1 without a GPU, else a quarter of the cores the GPU workers "
        "leave (at most 8).",
    )
    dtype: DType = Field(
        DType.FLOAT32, description="Compute precision of the workers (float16 on GPU only)."
    )
    quantize: Quantize = Field(
        Quantize.NONE,
        description="CPU only. int8: with torch, dynamic int8 quantisation of the linear "
        "layers; with openvino, int8 weights. int8-static (openvino): int8 weights and "
        "activations, calibrated on --calibration-file.",
    )
    backend: Backend = Field(
        Backend.AUTO,
        description="What runs the model: torch; openvino (CPU workers; pip install "
        "'pipeserve[openvino]'); auto: openvino on CPU workers where it is installed and serves "
        "the precision asked (float32, or --quantize with nncf), else torch.",
    )
    torch_compile: bool = Field(
        False,
        description="torch workers: compile the model with torch.compile (inductor, dynamic "
        "shapes) at start-up, then keep it only if it measures faster than eager there.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where the openvino backend keeps converted models, converted once and "
        "reused; default $HF_HOME/pipeserve (~/.cache/huggingface/pipeserve).",
    )
    calibration_file: Path | None = Field(
        None,
        description="UTF-8 text, one sample a line, on which --quantize int8-static calibrates "
        "the activations' int8 ranges (a few hundred lines of the traffic served).",
    )
    max_batch_tokens: int = Field(
        16384, ge=1, description="Token budget of a batch (longest sequence x batch size)."
    )
    max_batch_size: int = Field(32, ge=1, description="Most sequences in a batch.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long a free worker waits for a batch to fill. 0 adapts to the load: "
        "no wait for a lone caller; under load, up to a tenth of the last batch's forward time.",
    )
    max_items_per_request: int = Field(256, ge=1, description="Most inputs in one request.")
    max_text_chars: int = Field(
        50_000, ge=1, description="Longest text in characters, checked before tokenizing."
    )
    max_tokens_per_request: int = Field(
        65536, ge=1, description="Most tokens in one request, all items together."
    )
    max_queued_items: int = Field(
        4096, ge=1, description="Items waiting for a worker before calls are refused."
    )
    max_workers_per_device: int = Field(
        0,
        ge=0,
        description="Most workers per device a LoadModel may ask for; 0: the cores there are.",
    )
    max_candidate_labels: int = Field(
        256, ge=1, description="Most candidate_labels in one ClassifyZeroShot request."
    )
    max_targets: int = Field(1024, ge=1, description="Most targets in one FillMask request.")
    max_template_chars: int = Field(
        1000,
        ge=2,
        description="Longest hypothesis_template of ClassifyZeroShot, in characters; each "
        "hypothesis it makes must also fit --max-text-chars, checked before it is made.",
    )
    max_stream_in_flight: int = Field(
        64,
        ge=1,
        description="Requests of one ClassifyStream held at once; beyond that the stream is "
        "not read until answers have been written.",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="gRPC max receive and send message size."
    )
    forward_timeout_s: float = Field(
        120.0, gt=0, description="A batch not answered in this time marks its worker hung."
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="Time to finish in-flight calls on SIGTERM before stopping."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain; enables TLS.")
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA; clients must present a certificate it signed (mutual TLS)."
    )
    auth_token_file: Path | None = Field(
        None, description="File of accepted bearer tokens, one per line; enables token auth."
    )
    admin_token_file: Path | None = Field(
        None,
        description="File of admin bearer tokens, one per line; serves the Admin service "
        "(LoadModel, UnloadModel: models loaded and unloaded while serving) to calls bearing "
        "one. Off when unset.",
    )
    auth_open_health: bool = Field(
        False, description="Answer gRPC health checks without a token (for orchestrators)."
    )
    reflection: bool = Field(True, description="Serve gRPC server reflection.")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics over HTTP on this port (0 picks one); off if unset.",
    )
    metrics_host: str | None = Field(
        None,
        description="Address the metrics endpoint binds; unset: --host. It has no TLS: keep it "
        "on a private address, or set --metrics-token-file.",
    )
    metrics_token_file: Path | None = Field(
        None,
        description="File of bearer tokens, one per line; the metrics endpoint answers only "
        "scrapes bearing one. Unset: it answers anyone who reaches it.",
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="Log level.")
    log_format: LogFormat = Field(LogFormat.TEXT, description="Log line format.")
    tracing: bool = Field(
        False,
        description="Export OpenTelemetry traces of the calls (pip install "
        "'pipeserve[tracing]'), where the OTEL_* variables say: OTEL_TRACES_EXPORTER otlp "
        "(the default) or console, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME...",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_models_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("models_file") is None:
            return data
        if data.get("model") is not None:
            raise ValueError("give --model or --models-file, not both")
        models = read_models_file(Path(data["models_file"]))
        return {**data, "model": models.model, "default_model": models.default}

    @field_validator("model", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _check_models(self) -> "Settings":
        if self.models_file is not None:  # read again: a field cannot carry its options
            self._model_options = read_models_file(self.models_file).options
        if not self.model:
            raise ValueError("--model: give at least one model")
        names = [split_model(entry)[0] for entry in self.model]
        for name, entry in zip(names, self.model, strict=True):
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"--model {entry}: cannot name it {name!r}; give NAME={entry} with a NAME "
                    "of letters, digits, '.', '_' and '-' (at most 128)"
                )
        if len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"--model: the name {twice[0]} is given twice; use NAME=PATH")
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(
                f"--default-model {self.default_model}: not a served model ({', '.join(names)})"
            )
        self.per_model()  # a bad value in the models file fails here, at start-up
        return self

    @property
    def model_name(self) -> str:
        """Name of this settings' (first) model."""
        return split_model(self.model[0])[0]

    @property
    def model_source(self) -> str:
        """Path or hub id of this settings' (first) model."""
        return split_model(self.model[0])[1]

    @property
    def workers_per_device_limit(self) -> int:
        """Most workers per device a LoadModel may ask for."""
        return self.max_workers_per_device or len(os.sched_getaffinity(0))

    @property
    def default_name(self) -> str:
        """The model that requests naming none go to."""
        return self.default_model or self.model_name

    def per_model(self) -> tuple["Settings", ...]:
        """One settings object per served model, in the order given, each naming that model
        alone (and it as the default), with the values the models file gives it."""
        if not self._model_options:
            return tuple(
                self.model_copy(update={"model": (entry,), "default_model": None})
                for entry in self.model
            )
        common = self.model_dump(exclude={"model", "default_model", "models_file"})
        models = []
        for entry in self.model:
            name = split_model(entry)[0]
            try:
                given = {**common, **self._model_options.get(name, {}), "model": (entry,)}
                models.append(Settings.model_validate(given))
            except ValidationError as error:
                raise ValueError(
                    settings_problems(error, Terms(Origin.MODELS_FILE, name))
                ) from None
        return tuple(models)

    @field_validator("devices")
    @classmethod
    def _check_devices(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu"):
            return value
        parts = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"devices must be auto, cpu or GPU indices like 0,1; got {value!r}")
        return ",".join(parts)

    @model_validator(mode="after")
    def _check_tls(self) -> "Settings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return self


def settings_problems(error: ValidationError, terms: Terms) -> str:
    """What is wrong with settings, in the words of whoever gave them (`terms`): each problem
    as "--flag value: what is wrong", without pydantic's wording around it."""
    problems = []
    for problem in error.errors():
        message = problem["msg"]
        if problem["type"] == "value_error":  # one of ours: it names its flags itself
            message = str(problem["ctx"]["error"])
        if problem["loc"]:
            given = problem["input"]
            shown = ",".join(map(str, given)) if isinstance(given, (list, tuple)) else given
            message = f"{terms.option(str(problem['loc'][0]))} {shown}: {message}"
        problems.append(message)
    return "; ".join(problems)


def precision_label(backend: Backend, dtype: DType, quantize: Quantize) -> str:
    """The workers' precision in words (ModelInfo.dtype, the start-up log): "float32",
    "float32+int8" (torch, dynamic), "float32+int8-weights" or "float32+int8-static" (openvino).
    """
    if quantize is Quantize.NONE:
        return str(dtype)
    if quantize is Quantize.INT8 and backend is not Backend.OPENVINO:
        return f"{dtype}+int8"
    return f"{dtype}+int8-weights" if quantize is Quantize.INT8 else f"{dtype}+int8-static"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """A parser with one flag per Settings field; unset flags stay None so env vars apply."""
    parser = argparse.ArgumentParser(
        prog="pipeserve serve",
        description="Serve a Hugging Face text model over gRPC. Every flag can also be set "
        "with the environment variable shown, e.g. PIPESERVE_MAX_BATCH_SIZE=64.",
    )
    for name, field in Settings.model_fields.items():
        env = "PIPESERVE_" + name.upper()
        help_text = f"{field.description} [env {env}; default {field.default}]"
        if field.annotation is bool:
            parser.add_argument(
                _flag(name), dest=name, action=argparse.BooleanOptionalAction, help=help_text
            )
            continue
        kwargs: dict[str, Any] = {"dest": name, "help": help_text, "default": None}
        if isinstance(field.default, StrEnum):
            kwargs["choices"] = [m.value for m in type(field.default)]
        if isinstance(field.default, tuple):
            kwargs["action"] = "append"
        parser.add_argument(_flag(name), **kwargs)
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)
