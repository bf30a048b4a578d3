"""A request's `parameters` map read as typed options, and its texts and token ids read from
its tensors. Each mapping (`mappings.py`) names the parameters it takes; others are refused,
so that a misspelt option is an error rather than a silent default."""

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.server.edge.oip.tensors import Tensor
from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.inputs import TextOptions

_E = TypeVar("_E", bound=StrEnum)

# What other clients send on their own, which no mapping reads: Triton's scheduling
# parameters (sequence batching, priority, timeout) and MLServer's content types.
_IGNORED = frozenset(
    {"sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "content_type"}
)


class Parameters:
    def __init__(self, parameters: Mapping[str, oip.InferParameter]) -> None:
        self._values = {
            name: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for name, value in parameters.items()
        }

    def only(self, known: tuple[str, ...]) -> None:
        """Refuses a parameter outside `known` (and those other clients send by themselves)."""
        unknown = sorted(set(self._values) - set(known) - _IGNORED)
        if unknown:
            offered = ", ".join(known) or "none"
            raise InvalidInput(f"unknown parameters {unknown}; this request takes {offered}")

    def has(self, name: str) -> bool:
        return name in self._values

    def _get(self, name: str, kind: type, default: Any) -> Any:
        if name not in self._values:
            return default
        value = self._values[name]
        # bool is an int in Python: an int parameter must not take True.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidInput(f"parameter {name!r} must be a {kind.__name__}; got {value!r}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        return self._get(name, bool, default)

    def integer(self, name: str, default: int | None = None) -> int | None:
        return self._get(name, int, default)

    def text(self, name: str, default: str | None = None) -> str | None:
        return self._get(name, str, default)

    def listed(self, name: str) -> list[str]:
        """A comma-separated string parameter's items, trimmed (none when unset)."""
        value = self.text(name)
        return [] if value is None else [item.strip() for item in value.split(",")]

    def choice(self, name: str, members: type[_E], default: _E | None) -> _E | None:
        value = self.text(name)
        if value is None:
            return default
        try:
            return members(value)
        except ValueError:
            offered = ", ".join(member.value for member in members)
            raise InvalidInput(
                f"parameter {name!r} must be one of {offered}; got {value!r}"
            ) from None

    def text_options(self) -> TextOptions:
        return TextOptions(
            truncation=self.flag("truncation", True),
            max_length=self.integer("max_length") or None,
        )


def texts(tensors: Mapping[str, Tensor], name: str, rows: int | None = None) -> list[str]:
    """BYTES input `name` as one UTF-8 text per row ([N] or [N, 1]); `rows` its row count
    when another input sets it."""
    tensor = tensors[name]
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {name!r} must be BYTES (UTF-8 texts); got {tensor.datatype}")
    if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ((), (1,)):
        raise InvalidInput(
            f"input {name!r} must be [N] or [N, 1], one text a row; got {list(tensor.shape)}"
        )
    if rows is not None and tensor.shape[0] != rows:
        raise InvalidInput(f"input {name!r} has {tensor.shape[0]} rows; {rows} were expected")
    try:
        return [element.decode() for element in tensor.values]  # type: ignore[union-attr]
    except UnicodeDecodeError as error:
        raise InvalidInput(f"input {name!r} is not UTF-8: {error}") from None


def int_matrix(
    tensors: Mapping[str, Tensor], name: str, shape: tuple[int, ...] | None
) -> np.ndarray:
    """Integer input `name` as int64 [N, L]; of `shape` when another input sets it."""
    tensor = tensors[name]
    if tensor.datatype not in ("INT64", "INT32"):
        raise InvalidInput(f"input {name!r} must be INT64 (or INT32); got {tensor.datatype}")
    if len(tensor.shape) != 2 or (shape is not None and tensor.shape != shape):
        expected = "[N, L]" if shape is None else str(list(shape))
        raise InvalidInput(f"input {name!r} must be {expected}; got {list(tensor.shape)}")
    return np.asarray(tensor.values, dtype=np.int64).reshape(tensor.shape)
