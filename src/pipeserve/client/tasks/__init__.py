"""The task RPCs of the client, a module each (classify_tokens, fill_mask, embed, rerank,
zero_shot: the stems of their server request paths and CLI subcommands), each holding its
call spec, request building, response parsing and result types.

A new task RPC is a module here and a line in each of the two mixins below, which Client and
AsyncClient inherit (so that help(), inspect and IDEs see the methods), plus its result types
in `__all__`, which the package exports.
"""

from pipeserve.client import bind
from pipeserve.client.tasks import classify_tokens, embed, fill_mask, rerank, zero_shot
from pipeserve.client.tasks.classify_tokens import Entity
from pipeserve.client.tasks.fill_mask import MaskCandidate, MaskFill
from pipeserve.client.tasks.rerank import RankedDocument

# The result types the task RPCs return, exported by pipeserve.client.
__all__ = ["Entity", "MaskCandidate", "MaskFill", "RankedDocument"]


class TaskCalls:
    """The task RPCs as methods of the blocking Client."""

    classify_tokens = bind.blocking(classify_tokens.classify_tokens)
    fill_mask = bind.blocking(fill_mask.fill_mask)
    embed = bind.blocking(embed.embed)
    rerank = bind.blocking(rerank.rerank)
    classify_zero_shot = bind.blocking(zero_shot.classify_zero_shot)


class AsyncTaskCalls:
    """The task RPCs as methods of AsyncClient, awaited."""

    classify_tokens = bind.awaitable(classify_tokens.classify_tokens)
    fill_mask = bind.awaitable(fill_mask.fill_mask)
    embed = bind.awaitable(embed.embed)
    rerank = bind.awaitable(rerank.rerank)
    classify_zero_shot = bind.awaitable(zero_shot.classify_zero_shot)
