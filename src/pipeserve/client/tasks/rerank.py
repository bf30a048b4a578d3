"""Rerank from the client: its call (arguments and docstring), the request they build, how the
response is read and what it returns (RankedDocument).
Pure (no I/O); `tasks/__init__.py` binds the call as a method of Client and AsyncClient.
"""

import dataclasses
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeserve.client.bind import Call
from pipeserve.client.build import _options, _positive_or_none, _texts
from pipeserve.client.split import Split, text_tokens, token_bound
from pipeserve.v1 import pipeserve_pb2 as pb


@dataclass(frozen=True)
class RankedDocument:
    """One document of a rerank() result: its index in the documents sent, its score, and its
    text when return_documents was asked for."""

    index: int
    score: float
    document: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """CrossEncoder.rank()'s {"corpus_id", "score"} (and "text" when returned)."""
        ranked: dict[str, Any] = {"corpus_id": self.index, "score": self.score}
        if self.document is not None:
            ranked["text"] = self.document
        return ranked


def rerank_request(
    query: str,
    documents: Iterable[str],
    *,
    top_n: int | None = None,
    return_documents: bool = False,
    raw_scores: bool = False,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
) -> pb.RerankRequest:
    """Builds a RerankRequest; raises TypeError/ValueError for inputs or options it can't send."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a text, got {type(query).__name__}")
    return pb.RerankRequest(
        model=model,
        query=query,
        documents=_texts(documents, "documents"),
        top_n=_positive_or_none("top_n", top_n),
        return_documents=bool(return_documents),
        raw_scores=bool(raw_scores),
        options=_options(truncation=truncation, max_length=max_length),
    )


def ranked_documents(response: pb.RerankResponse, with_text: bool) -> list[RankedDocument]:
    """The documents best first."""
    return [
        RankedDocument(index=r.index, score=r.score, document=r.document if with_text else None)
        for r in response.results
    ]


def rerank(
    query: str,
    documents: Iterable[str],
    *,
    top_n: int | None = None,
    return_documents: bool = False,
    raw_scores: bool = False,
    truncation: bool = True,
    max_length: int | None = None,
    model: str = "",
    timeout: float | None = None,
) -> Call[list[RankedDocument]]:
    """Ranks `documents` by relevance to `query` with a cross-encoder, best first, as
    CrossEncoder(model).rank(query, documents) does.

    Scores are the model's activation of its one logit (sigmoid unless the checkpoint saved
    another), or the raw logit with `raw_scores`. `top_n` None returns every document;
    `return_documents` puts each document's text in its result.
    """
    request = rerank_request(
        query,
        documents,
        top_n=top_n,
        return_documents=return_documents,
        raw_scores=raw_scores,
        truncation=truncation,
        max_length=max_length,
        model=model,
    )
    parts = Split(
        "documents",
        functools.partial(best_of_parts, top_n=top_n),
        token_bound(request, text_tokens(query)),
    )
    read = functools.partial(ranked_documents, with_text=return_documents)
    return Call("Rerank", request, read, timeout, parts)


def best_of_parts(
    parts: list[tuple[int, list[RankedDocument]]], top_n: int | None
) -> list[RankedDocument]:
    """The documents ranked in parts as one ranking: indices into all the documents, best
    first (ties in document order, as each part's), the `top_n` best of all."""
    ranked = [
        dataclasses.replace(document, index=start + document.index)
        for start, documents in parts
        for document in documents
    ]
    ranked.sort(key=lambda document: (-document.score, document.index))
    return ranked[:top_n]
