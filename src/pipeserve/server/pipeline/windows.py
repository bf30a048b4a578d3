"""Long texts as windows: the checks on a stride, and how a text's window scores become one.
Pure numpy; knows nothing of gRPC or workers."""

from enum import StrEnum

import numpy as np

from pipeserve.server.errors import InvalidInput


class WindowAggregation(StrEnum):
    MEAN = "mean"
    MAX = "max"


def check_stride(stride: int, max_length: int, special_tokens: int) -> None:
    """A window must move on: the overlap must be shorter than a window's text tokens."""
    room = max_length - special_tokens
    if stride >= room:
        raise InvalidInput(
            f"stride {stride} must be less than {room}: max_length {max_length} less the "
            f"{special_tokens} special tokens of each window"
        )


def combine(scores: np.ndarray, how: WindowAggregation) -> np.ndarray:
    """One row of scores [labels] from a text's windows' rows [windows, labels]."""
    if how is WindowAggregation.MAX:
        return scores.max(axis=0)
    return scores.mean(axis=0)
