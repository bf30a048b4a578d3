"""How a call spec becomes a client method: a spec is a function of the call's Python
arguments that returns the `Call` to make (the RPC, its request, its response's parser, its
timeout, and how it splits when too large for the server); `blocking` and `awaitable` bind it
as a method of a blocking or an asyncio client, showing the spec's signature and docstring,
which makes the call through the client's fanout (`fanout.py`). `calls.py` holds the Inference
service's core specs, a module each of `tasks/` its task RPCs', `admin.py` the Admin service's.
"""

import functools
import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from google.protobuf.message import Message

from pipeserve.client.split import Split

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Call(Generic[R]):
    """One call to make: the Inference method, its request, its response's parser, the
    call's own timeout (None: the client's default) and how its request splits into requests
    within the server's limits (None: it goes whole)."""

    rpc: str
    request: Message
    parse: Callable[[Any], R]
    timeout: float | None
    split: Split[R] | None = None


def blocking(spec: Callable[P, Call[R]]) -> Callable[Concatenate[Any, P], R]:
    """`spec` as a method of Client: builds the request, calls, returns the parsed answer."""

    def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._fanout(spec(*args, **kwargs))

    return _shown_as(method, spec)


def awaitable(spec: Callable[P, Call[R]]) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """`spec` as a method of AsyncClient: the same, awaited."""

    async def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._fanout(spec(*args, **kwargs))

    return _shown_as(method, spec)


def _shown_as(method: Callable, spec: Callable) -> Any:
    """`method` with `spec`'s name, docstring and parameters (after self), returning what the
    call's parser returns: what help(), inspect and IDEs show of Client.embed."""
    functools.update_wrapper(method, spec)
    signature = inspect.signature(spec, eval_str=True)
    (returned,) = typing.get_args(signature.return_annotation)
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self, *signature.parameters.values()], return_annotation=returned
    )
    method.__annotations__ = {**typing.get_type_hints(spec), "return": returned}
    return method
