"""What the Embed, Rerank and ClassifyZeroShot tests share: tiny random BERT checkpoints whose
outputs vary strongly with their input, and a server with two front ends, a client on each."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeserve.client import Client

from .conftest import _save_tiny, clients_by_frontend
from .test_reliability import serving


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
def two_front_ends(model: Path) -> Iterator[list[Client]]:
    """`model` served with `--frontends 2`, and a client on each front end."""
    with serving(model, "--frontends", "2") as server:
        clients = clients_by_frontend(server.address)
        try:
            yield list(clients.values())
        finally:
            for client in clients.values():
                client.close()
