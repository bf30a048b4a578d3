"""Embed from the client: its call (arguments and docstring), the request they build and how the
response is read (a numpy array).
Pure (no I/O); `tasks/__init__.py` binds the call as a method of Client and AsyncClient.
"""

from collections.abc import Iterable

import numpy as np

from pipeserve.client.bind import Call
from pipeserve.client.build import (
    ForwardDType,
    _options,
    _output_dtype,
    _positive_or_none,
    _texts,
)
from pipeserve.client.split import Split, stacked, text_tokens, token_bound
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.wire import from_proto


def embed_request(
    inputs: Iterable[str],
    *,
    normalize: bool = False,
    truncate_dim: int | None = None,
    dtype: ForwardDType = "float32",
    prompt: str | None = None,
    prompt_name: str | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.EmbedRequest:
    """Builds an EmbedRequest; raises TypeError/ValueError for inputs or options it can't send.
    `prompt` None applies the checkpoint's default prompt, "" none at all."""
    if prompt is not None and prompt_name is not None:
        raise ValueError("give prompt or prompt_name, not both")
    request = pb.EmbedRequest(
        model=model,
        inputs=_texts(inputs, "inputs"),
        normalize=bool(normalize),
        truncate_dim=_positive_or_none("truncate_dim", truncate_dim),
        output_dtype=_output_dtype(dtype),
        options=_options(truncation=truncation, max_length=max_length),
        prompt_name=prompt_name or "",
    )
    if prompt is not None:  # set, even empty: unset is what asks for the default
        request.prompt = prompt
    return request


def embeddings(response: pb.EmbedResponse) -> np.ndarray:
    """The [inputs, dimension] embeddings, float32 or float16 as asked."""
    return from_proto(response.embeddings)


def embed(
    inputs: Iterable[str],
    *,
    normalize: bool = False,
    truncate_dim: int | None = None,
    dtype: ForwardDType = "float32",
    prompt: str | None = None,
    prompt_name: str | None = None,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[np.ndarray]:
    """Sentence embeddings of `inputs`, as SentenceTransformer(model).encode() gives them.

    Returns an [inputs, dimension] numpy array (float32, or float16 with dtype="float16").
    The server pools as the checkpoint's modules.json says (mean pooling without one) and
    applies its Normalize module. `normalize` L2-normalises each row after `truncate_dim`
    (keep the first dimensions, for Matryoshka models). `prompt` is put before every text
    ("" for none at all); `prompt_name` picks one of the checkpoint's prompts
    (ModelInfo.embedding.prompts; "query" and "document" are always there, maybe empty).
    With neither, the checkpoint's default prompt applies, as in encode().
    `max_length` None means the checkpoint's max_seq_length.
    """
    request = embed_request(
        inputs,
        normalize=normalize,
        truncate_dim=truncate_dim,
        dtype=dtype,
        prompt=prompt,
        prompt_name=prompt_name,
        truncation=truncation,
        max_length=max_length,
        model=model,
    )
    # A named or default prompt's text is the server's, unknown here: a part holding many short
    # texts may then be refused for its tokens; max_length still bounds each text's.
    prompt_tokens = text_tokens(prompt) if prompt else 0
    parts = Split("inputs", stacked, token_bound(request, prompt_tokens))
    return Call("Embed", request, embeddings, timeout, parts)
