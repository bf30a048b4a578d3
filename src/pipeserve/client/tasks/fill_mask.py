"""FillMask from the client: its call (arguments and docstring), the request they build, how
the response is read and what it returns (MaskFill, MaskCandidate).
Pure (no I/O); `tasks/__init__.py` binds the call as a method of Client and AsyncClient.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeserve.client.bind import Call
from pipeserve.client.build import _UINT32_MAX, _options, _strings, _texts
from pipeserve.client.split import Split, concatenated, token_bound
from pipeserve.v1 import pipeserve_pb2 as pb


@dataclass(frozen=True)
class MaskCandidate:
    """A token for a mask, as the fill-mask pipeline gives it."""

    score: float
    token: int
    token_str: str
    sequence: str

    def to_dict(self) -> dict[str, Any]:
        """The fill-mask pipeline's dict."""
        return {
            "score": self.score,
            "token": self.token,
            "token_str": self.token_str,
            "sequence": self.sequence,
        }


@dataclass(frozen=True)
class MaskFill:
    """The candidates for one mask of a text, best first; `position` is the mask's token index."""

    position: int
    candidates: list[MaskCandidate]

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "candidates": [c.to_dict() for c in self.candidates]}


def fill_mask_request(
    inputs: Iterable[str],
    *,
    top_k: int = 5,
    targets: Iterable[str] | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.FillMaskRequest:
    """Builds a FillMaskRequest; raises TypeError/ValueError for inputs or options it can't
    send."""
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= _UINT32_MAX:
        raise ValueError(f"top_k must be a positive int; got {top_k!r}")
    return pb.FillMaskRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        top_k=top_k,
        targets=_strings(targets or (), "targets"),
        options=_options(truncation=truncation, max_length=max_length),
    )


def mask_fills(response: pb.FillMaskResponse) -> list[list[MaskFill]]:
    """Per input, per mask token, its candidates best first."""
    return [
        [
            MaskFill(
                position=mask.position,
                candidates=[
                    MaskCandidate(
                        score=c.score, token=c.token, token_str=c.token_str, sequence=c.sequence
                    )
                    for c in mask.candidates
                ],
            )
            for mask in result.masks
        ]
        for result in response.results
    ]


def fill_mask(
    inputs: Iterable[str],
    *,
    top_k: int = 5,
    targets: Iterable[str] | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[list[MaskFill]]]:
    """Fills in each mask token (ModelInfo.mask_token, e.g. "[MASK]") of the texts with a
    masked language model, as transformers' pipeline("fill-mask").

    Returns per text, per mask in text order, its `top_k` best candidates (`targets`: only
    among these tokens). Each text needs at least one mask token.
    """
    request = fill_mask_request(
        inputs,
        model=model,
        top_k=top_k,
        targets=targets,
        truncation=truncation,
        max_length=max_length,
    )
    parts = Split("inputs", concatenated, token_bound(request))
    return Call("FillMask", request, mask_fills, timeout, parts)
