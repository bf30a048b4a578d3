"""Outputs a worker derives from the backend's own right after the forward, whatever the
backend, so that only what the server uses crosses shared memory: pooled embeddings
(`pooling.pooled_output`, [hidden] an item where last_hidden_state is [tokens, hidden]) and
the mask tokens' logits (`fill_mask.mask_logits_output`, [masks, vocab] an item where logits
are [tokens, vocab]). Pure numpy: a worker serving OpenVINO never imports torch.
"""

from collections.abc import Sequence

import numpy as np

from pipeserve.server.backends.runner import ModelRunner
from pipeserve.server.pipeline.fill_mask import gather_masks, parse_mask_logits
from pipeserve.server.pipeline.pooling import parse_pooled, pool


def forward_derived(
    runner: ModelRunner,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    token_type_ids: np.ndarray | None,
    outputs: Sequence[str],
) -> dict[str, np.ndarray]:
    """The named `outputs` of one batch: the backend's own, and any derived one computed here
    from the backend output it derives from."""
    pooled = {name: parse_pooled(name) for name in outputs}
    masks = {name: parse_mask_logits(name) for name in outputs}
    raw = [name for name in outputs if pooled[name] is None and masks[name] is None]
    needed = [
        source
        for source, derived in (("last_hidden_state", pooled), ("logits", masks))
        if any(value is not None for value in derived.values())
    ]
    result = runner.forward(
        input_ids, attention_mask, token_type_ids, list(dict.fromkeys(raw + needed))
    )
    derived: dict[str, np.ndarray] = {}
    for name in outputs:
        if (how := pooled[name]) is not None:
            derived[name] = pool(result["last_hidden_state"], attention_mask, *how)
        elif (mask_token_id := masks[name]) is not None:
            derived[name] = gather_masks(result["logits"], input_ids, attention_mask, mask_token_id)
        else:
            derived[name] = result[name]
    return derived
