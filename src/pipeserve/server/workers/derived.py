"""Outputs a worker derives from the backend's own right after the forward, whatever the
backend, so that only what the server uses crosses shared memory: pooled embeddings
(`schema.Pooled`, [hidden] an item where last_hidden_state is [tokens, hidden]) and the mask
tokens' logits (`schema.MaskRows`, [masks, vocab] an item where logits are [tokens, vocab]).
Pure numpy: a worker serving OpenVINO never imports torch.
"""

from collections.abc import Sequence

import numpy as np

from pipeserve.server.backends.runner import ModelRunner
from pipeserve.server.pipeline.fill_mask import gather_masks
from pipeserve.server.pipeline.pooling import pool
from pipeserve.server.schema import MaskRows, Output, Pooled


def forward_derived(
    runner: ModelRunner,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    token_type_ids: np.ndarray | None,
    outputs: Sequence[Output],
) -> dict[Output, np.ndarray]:
    """The `outputs` of one batch: the backend's own, and any derived one computed here from
    the backend output it derives from."""
    sources = list(dict.fromkeys(map(_source, outputs)))
    result = runner.forward(input_ids, attention_mask, token_type_ids, sources)
    derived: dict[Output, np.ndarray] = {}
    for output in outputs:
        match output:
            case Pooled(mode, skip):
                derived[output] = pool(result["last_hidden_state"], attention_mask, mode, skip)
            case MaskRows(token_id):
                logits = result["logits"]
                derived[output] = gather_masks(logits, input_ids, attention_mask, token_id)
            case str():
                derived[output] = result[output]
    return derived


def _source(output: Output) -> str:
    """The backend output that `output` is, or is derived from."""
    match output:
        case Pooled():
            return "last_hidden_state"
        case MaskRows():
            return "logits"
        case str():
            return output
