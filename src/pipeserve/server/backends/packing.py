"""Packed batches on torch: a right-padded batch run as one stream of its rows' real tokens, so
that no compute goes on padding.

Every layer of an encoder but attention works token by token, so the rows' real tokens can run
as one sequence of their total length: the linear layers (nearly all of the compute at these
lengths) see no padding at all. Attention alone must not look across rows: it runs row by row
over the stream (`cu_seqlens`: where each row starts, as flash attention's variable-length
kernels take it; vLLM's pooling runner packs the same way). Each token keeps the position it
has in its own row. After the encoder the stream is put back as the padded batch, so the head
(pooler, classifier, language-model head) and everything downstream see the batch they always
did; only padded positions differ, and the server never reads those.

Only architectures whose positions are absolute and known here pack (`supports`); others run
padded, in the length buckets the server cuts. On a CPU only: a GPU runs padding nearly free
next to a row-by-row loop.
"""

import itertools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "pipeserve_packed"


def _bert_positions(ids: np.ndarray, _pad: int) -> np.ndarray:
    return np.broadcast_to(np.arange(ids.shape[1]), ids.shape)


def _roberta_positions(ids: np.ndarray, pad: int) -> np.ndarray:
    # As RoBERTa numbers a padded row itself: from padding_idx + 1, pad tokens at padding_idx.
    real = ids != pad
    return np.cumsum(real, axis=1) * real + pad


# model_type -> (the encoder's attribute on the base model, its tokens' positions in a row).
_ARCHITECTURES: dict[str, tuple[str, Callable[[np.ndarray, int], np.ndarray]]] = {
    "bert": ("encoder", _bert_positions),
    "distilbert": ("transformer", _bert_positions),
    "electra": ("encoder", _bert_positions),
    "roberta": ("encoder", _roberta_positions),
    "xlm-roberta": ("encoder", _roberta_positions),
    "camembert": ("encoder", _roberta_positions),
}


def _attention(module, query, key, value, attention_mask, *, cu_seqlens=None, **kwargs):
    """Scaled dot-product attention row by row over a packed stream; plain SDPA otherwise."""
    if cu_seqlens is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    scale = kwargs.get("scaling")
    rows = [
        F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], scale=scale
        )
        for start, end in itertools.pairwise(cu_seqlens)
    ]
    # [1, heads, tokens, head size] -> [1, tokens, heads, head size], as SDPA's forward returns.
    return torch.cat(rows, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, _attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def supports(model: PreTrainedModel) -> bool:
    config = model.config
    return (
        config.model_type in _ARCHITECTURES
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
    )


class Packing:
    """Runs `model` (which `supports`) on packed streams: `run` gives it a padded batch as one
    stream, and the encoder's output is put back as the padded batch."""

    def __init__(self, model: PreTrainedModel) -> None:
        encoder, self._positions = _ARCHITECTURES[model.config.model_type]
        self._pad = model.config.pad_token_id or 0
        self._mask: torch.Tensor | None = None
        model.set_attn_implementation(ATTENTION)
        getattr(model.base_model, encoder).register_forward_hook(self._repad)

    def run(
        self,
        module: Callable[..., dict[str, torch.Tensor]],
        ids: np.ndarray,
        mask: np.ndarray,
        types: np.ndarray | None,
    ) -> dict[str, torch.Tensor]:
        """`module` (the model, or a wrapper that passes its keywords on) run on the padded
        batch as one stream; its outputs come back padded as `mask`."""
        real = mask.astype(bool)
        packed: dict[str, object] = {
            "input_ids": torch.from_numpy(ids[real])[None],
            "attention_mask": None,
            "position_ids": torch.from_numpy(self._positions(ids, self._pad)[real])[None],
            "cu_seqlens": [0, *np.cumsum(real.sum(axis=1)).tolist()],
        }
        if types is not None:
            packed["token_type_ids"] = torch.from_numpy(types[real])[None]
        self._mask = torch.from_numpy(real)
        try:
            return module(**packed)
        finally:
            self._mask = None  # the model's other forwards are not packed

    def _repad(self, _module, _args, output):
        if self._mask is None:
            return None
        stream = output["last_hidden_state"][0]
        padded = stream.new_zeros((*self._mask.shape, stream.shape[-1]))
        padded[self._mask] = stream
        output["last_hidden_state"] = padded
        return output
