"""Sentence-embedding pooling over token states, as sentence-transformers' Pooling module does
it for right-padded batches: cls, mean, max or lasttoken, the first `skip` tokens of each row
left out (a prompt, when the checkpoint's pooling has include_prompt false).

Runs in the worker right after the forward, whatever the backend: a pooled row is [hidden],
where last_hidden_state is [tokens, hidden], so pooling there sends a fraction of the data
through shared memory and spares the server's event loop the reduction. The server decides how
to pool (from the checkpoint's files, see embed.py) and asks for it as a `schema.Pooled` output
(workers/derived.py computes it). Pure numpy: a worker serving OpenVINO never imports torch.
"""

import numpy as np


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str, skip: int) -> np.ndarray:
    """[batch, tokens, hidden] float32 states and their [batch, tokens] mask -> [batch, hidden]."""
    mask = attention_mask.astype(bool)
    if skip:
        mask = mask.copy()
        mask[:, :skip] = False
    rows = np.arange(hidden.shape[0])
    if mode == "cls":
        return hidden[rows, mask.argmax(axis=1)]
    if mode == "max":
        return np.where(mask[..., None], hidden, -np.inf).max(axis=1).astype(np.float32)
    if mode == "mean":
        weights = mask[..., None].astype(np.float32)
        total = (hidden * weights).sum(axis=1)
        return total / np.maximum(weights.sum(axis=1), 1e-9)
    if mode == "lasttoken":
        length = hidden.shape[1]
        flipped = mask[:, ::-1]
        from_end = np.where(flipped.any(axis=1), flipped.argmax(axis=1), length - 1)
        masked = hidden * mask[..., None].astype(np.float32)
        return masked[rows, length - from_end - 1]
    raise ValueError(f"unknown pooling mode {mode!r}")
