"""Sentence-embedding pooling over token states, as sentence-transformers' Pooling module does
it for right-padded batches: cls, mean, max or lasttoken, the first `skip` tokens of each row
left out (a prompt, when the checkpoint's pooling has include_prompt false).

Runs in the worker, on the device, right after the forward: a pooled row is [hidden], where
last_hidden_state is [tokens, hidden], so pooling here sends a fraction of the data through
shared memory and spares the server's event loop the reduction. The server decides how to pool
(from the checkpoint's files) and says so in the output name it asks for (see embeddings.py).
"""

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str, skip: int) -> torch.Tensor:
    """[batch, tokens, hidden] states and their [batch, tokens] mask -> [batch, hidden]."""
    hidden = hidden.float()  # sentence-transformers accumulates half precision in float32
    mask = attention_mask.to(hidden.device).clone()
    if skip:
        mask[:, :skip] = 0
    if mode == "cls":
        first = mask.to(torch.int).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if mode == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        total = (hidden * weights).sum(dim=1)
        return total / torch.clamp(weights.sum(dim=1), min=1e-9)
    if mode == "lasttoken":
        length = hidden.shape[1]
        values, from_end = mask.flip(1).max(1)
        from_end = torch.where(values == 0, length - 1, from_end)
        last = length - from_end - 1
        masked = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return masked[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling mode {mode!r}")
