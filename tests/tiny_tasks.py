"""What the Embed, Rerank and ClassifyZeroShot tests share: tiny random BERT checkpoints whose
outputs vary strongly with their input, and a client on each of a server's two front ends."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import OWN_CONNECTION, ModelClient, ServerProcess, _save_tiny, by_frontend, serving


def save_tiny_bert(folder: Path, model_class: str, tokenizer: Path, seed: int, **config) -> Path:
    """A two-layer BERT (`model_class`, e.g. "BertModel") with random weights, saved with the
    real uncased tokenizer. Weights drawn wider than the default 0.02 make outputs that differ
    from input to input, so a result given to the wrong item would show."""
    import torch
    import transformers

    torch.manual_seed(seed)
    bert = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        initializer_range=0.3,
        **config,
    )
    model = getattr(transformers, model_class)(bert).eval()
    return _save_tiny(folder, model, tokenizer)


@contextmanager
def front_end_clients(server: ServerProcess, model: str = "") -> Iterator[list[ModelClient]]:
    """A client of `model` on each of `server`'s two front ends."""
    clients = by_frontend(
        lambda: ModelClient(server.address, model, timeout=60, channel_options=OWN_CONNECTION),
        lambda client: client.model_info().frontend_pid,
    )
    try:
        yield list(clients.values())
    finally:
        for client in clients.values():
            client.close()


@contextmanager
def two_front_ends(model: Path) -> Iterator[list[ModelClient]]:
    """`model` served with `--frontends 2`, and a client on each front end."""
    with serving(model, "--frontends", "2") as server, front_end_clients(server) as clients:
        yield clients
