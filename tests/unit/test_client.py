"""The Python clients' surface: the sync and asyncio clients show every call's parameters and
docstring alike. Against a server: tests/e2e/test_client.py."""

import inspect
import pydoc

import numpy as np

from pipeserve.client import (
    AsyncClient,
    Client,
)

# --- What help() shows -------------------------------------------------------------------------


def test_both_clients_show_every_calls_parameters_and_docstring():
    """The unary calls are written once (client/calls.py, a module each of client/tasks/) and
    bound to both clients: each method still shows its own parameters, defaults, return type
    and docstring."""
    public = [n for n in dir(Client) if not n.startswith("_") and n != "close"]
    # Every call, the task RPCs' (bound in a mixin) as well as the core ones.
    assert {"tokenize", "classify_stream", "fill_mask", "classify_zero_shot"} <= set(public)
    for name in public:
        sync, aio = getattr(Client, name), getattr(AsyncClient, name)
        assert inspect.signature(sync).parameters.keys() == inspect.signature(aio).parameters.keys()
        assert next(iter(inspect.signature(sync).parameters)) == "self"
        assert sync.__doc__ and aio.__doc__, name
        if name != "classify_stream":
            assert inspect.iscoroutinefunction(aio), name
            assert sync.__doc__ == aio.__doc__, name
    embed = inspect.signature(Client.embed)
    assert embed.parameters["truncate_dim"].default is None
    assert embed.parameters["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert embed.return_annotation is np.ndarray
    shown = pydoc.render_doc(Client.embed, renderer=pydoc.plaintext)
    assert "normalize: bool = False" in shown and "Sentence embeddings" in shown
