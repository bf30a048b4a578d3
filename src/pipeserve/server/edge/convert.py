"""Proto <-> plain conversions that the servicers (service.py, service_tasks.py) share: enum
fields, tokenize options, labels, stage times and the call's deadline."""

import asyncio
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

import grpc
import numpy as np

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import LabelScore
from pipeserve.server.pipeline.inputs import Padding, TextOptions
from pipeserve.server.requests.infer import Timings
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import PADDINGS

_E = TypeVar("_E", bound=StrEnum)

FLOAT_DTYPE = {
    pb.DTYPE_UNSPECIFIED: np.float32,
    pb.DTYPE_FLOAT32: np.float32,
    pb.DTYPE_FLOAT16: np.float16,
}


def from_choices(choices: Mapping[str, int], members: type[_E]) -> dict[int, _E]:
    """A .proto enum's values (wire.enum_choices) -> the members of the server's own enum of
    the same values, so that the server maps options by the .proto's names alone."""
    return {number: members(name) for name, number in choices.items()}


PADDING = {pb.PADDING_UNSPECIFIED: Padding.LONGEST, **from_choices(PADDINGS, Padding)}


def enum_value(table: dict, value: int, field: str):
    if value not in table:
        raise InvalidInput(f"unknown {field} value {value}")
    return table[value]


def text_options(options: pb.TokenizeOptions, padding: int = pb.PADDING_UNSPECIFIED) -> TextOptions:
    """The options of a request; `padding` is Tokenize's, the other RPCs pad as they need."""
    return TextOptions(
        padding=enum_value(PADDING, padding, "padding"),
        truncation=options.truncation if options.HasField("truncation") else True,
        max_length=options.max_length or None,
    )


def labels_proto(
    labels: list[list[LabelScore]], timings: Timings, windows: list[int] | None = None
) -> pb.ClassifyResponse:
    """Each item's labels and where the time went; `windows` says how many windows each
    was classified by (one)."""
    response = pb.ClassifyResponse(timings=timings_proto(timings))
    for row, count in zip(labels, windows or [1] * len(labels), strict=True):
        # add() in place: half the cost of building each message first
        classification = response.results.add(windows=count)
        for s in row:
            classification.labels.add(label=s.label, score=s.score, index=s.index)
    return response


def timings_proto(timings: Timings) -> pb.Timings:
    return pb.Timings(
        tokenize_ms=timings.tokenize_ms,
        queue_ms=timings.queue_ms,
        forward_ms=timings.forward_ms,
        postprocess_ms=timings.postprocess_ms,
    )


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining
