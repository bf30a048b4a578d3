"""Proto <-> plain conversions that the servicers (service.py, service_tasks.py) share: enum
fields, tokenize options, labels, stage-time metadata and the call's deadline."""

import asyncio

import grpc
import numpy as np

from pipeserve.server.errors import InvalidInput
from pipeserve.server.pipeline.classify import LabelScore
from pipeserve.server.pipeline.inputs import Padding, TextOptions
from pipeserve.server.requests.infer import Timings
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import STAGE_TIME_KEYS

PADDING = {
    pb.PADDING_UNSPECIFIED: Padding.LONGEST,
    pb.PADDING_LONGEST: Padding.LONGEST,
    pb.PADDING_MAX_LENGTH: Padding.MAX_LENGTH,
    pb.PADDING_NONE: Padding.NONE,
}
FLOAT_DTYPE = {
    pb.DTYPE_UNSPECIFIED: np.float32,
    pb.DTYPE_FLOAT32: np.float32,
    pb.DTYPE_FLOAT16: np.float16,
}
TIMING_KEYS = tuple(STAGE_TIME_KEYS.values())


def enum_value(table: dict, value: int, field: str):
    if value not in table:
        raise InvalidInput(f"unknown {field} value {value}")
    return table[value]


def text_options(options: pb.TokenizeOptions) -> TextOptions:
    return TextOptions(
        padding=enum_value(PADDING, options.padding, "padding"),
        truncation=options.truncation if options.HasField("truncation") else True,
        max_length=options.max_length or None,
    )


def labels_proto(
    labels: list[list[LabelScore]], windows: list[int] | None = None
) -> pb.ClassifyResponse:
    """Each item's labels; `windows` says how many windows each was classified by (one)."""
    response = pb.ClassifyResponse()
    for row, count in zip(labels, windows or [1] * len(labels), strict=True):
        # add() in place: half the cost of building each message first
        classification = response.results.add(windows=count)
        for s in row:
            classification.labels.add(label=s.label, score=s.score, index=s.index)
    return response


def timing_metadata(timings: Timings) -> tuple[tuple[str, str], ...]:
    values = (timings.tokenize_ms, timings.queue_ms, timings.forward_ms)
    return tuple((key, f"{value:.3f}") for key, value in zip(TIMING_KEYS, values, strict=True))


def call_deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else asyncio.get_running_loop().time() + remaining
