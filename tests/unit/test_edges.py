"""Fidelity at the edges, in process: the activation a cross-encoder applies, position tables
that start past padding_idx, old sentence-transformers config names, and the limits and
templates whose mistakes are the caller's (INVALID_ARGUMENT naming the cause, never INTERNAL),
refused before any work. Served through real servers: tests/e2e/test_edges.py."""

from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints import IDENTITY, save_cross_encoder, save_lowercasing_minilm

SIGMOID = "torch.nn.modules.activation.Sigmoid"


def _card(path: Path):
    from pipeserve.server.model.card import load_model_card
    from pipeserve.server.settings import Settings

    return load_model_card(Settings(model=(str(path),)))


def _sentence_transformers_6(folder: Path, tokenizer: Path) -> Path:
    """A cross-encoder as sentence-transformers 6 saves one: its activation in
    config_sentence_transformers.json, none in config.json."""
    import torch
    from sentence_transformers import CrossEncoder

    plain = save_cross_encoder(folder / "plain", tokenizer)
    CrossEncoder(str(plain), activation_fn=torch.nn.Identity()).save(str(folder / "st6"))
    return folder / "st6"


# Each way a checkpoint can carry its activation -> the config.json keys that say it.
_ACTIVATION_CONFIGS = {
    "legacy key, identity (ms-marco)": {"sbert_ce_default_activation_function": IDENTITY},
    "legacy key, sigmoid": {"sbert_ce_default_activation_function": SIGMOID},
    "legacy key under an empty sentence_transformers": {
        "sentence_transformers": {},
        "sbert_ce_default_activation_function": IDENTITY,
    },
    "current key wins over the legacy one": {
        "sentence_transformers": {"activation_fn": IDENTITY},
        "sbert_ce_default_activation_function": SIGMOID,
    },
    "a path outside torch is not trusted: the default": {
        "sentence_transformers": {"activation_fn": "my_package.Scaled"},
        "sbert_ce_default_activation_function": IDENTITY,
    },
    "sentence-transformers 6 (config_sentence_transformers.json)": None,
}


@pytest.mark.parametrize("case", list(_ACTIVATION_CONFIGS))
def test_the_activation_is_the_one_cross_encoder_applies(case, tmp_path, minilm_path):
    import torch
    from sentence_transformers import CrossEncoder

    from pipeserve.server.pipeline.classify import apply_score_function
    from pipeserve.server.pipeline.rerank import cross_encoder_activation

    config = _ACTIVATION_CONFIGS[case]
    if config is None:
        path = _sentence_transformers_6(tmp_path, minilm_path)
    else:
        path = save_cross_encoder(tmp_path / "ce", minilm_path, **config)
    expected = CrossEncoder(str(path), device="cpu").activation_fn
    function = cross_encoder_activation(_card(path).cross_encoder_activation)
    assert function is not None
    logits = np.linspace(-6, 6, 25, dtype=np.float32)
    np.testing.assert_allclose(
        apply_score_function(logits, function),
        expected(torch.from_numpy(logits)).numpy(),
        rtol=0,
        atol=1e-6,
    )


def test_max_length_counts_the_position_offset(tiny_roberta):
    from transformers import AutoConfig

    from pipeserve.server.model.card import position_limit

    assert _card(tiny_roberta).max_length == 64
    assert position_limit(AutoConfig.from_pretrained(tiny_roberta)) == 64


def test_old_sentence_config_names_and_tokenizer_args_are_read(tmp_path, minilm_path):
    from pipeserve.server.pipeline.embed import load_sentence_config

    config = load_sentence_config(str(save_lowercasing_minilm(tmp_path / "m", minilm_path)), None)
    assert (config.do_lower_case, config.max_seq_length) == (True, 24)


def test_templates_that_cannot_be_formatted_are_caller_mistakes():
    from pipeserve.server.errors import InvalidInput
    from pipeserve.server.pipeline.zero_shot import hypotheses

    for template in ("{.foo}", "{[x]}", "{0.real}", "{1}", "{name}", "{!z}", "{:q}"):
        with pytest.raises(InvalidInput, match="cannot be formatted"):
            hypotheses(["sports"], template)
    assert hypotheses(["sports"], "{:>12}!") == ["      sports!"]
    with pytest.raises(InvalidInput, match="a field 999999999 characters wide; at most 1000"):
        hypotheses(["sports"], "{:>999999999}")


def test_pairs_limits_count_what_the_caller_sent():
    from pipeserve.server.errors import TooLarge
    from pipeserve.server.pipeline.validation import check_pairs

    check_pairs(29, 20, max_items=256, max_queued_items=4096)
    with pytest.raises(TooLarge, match="too many texts: 300 in one request"):
        check_pairs(300, 2, max_items=256, max_queued_items=4096)
    with pytest.raises(TooLarge, match="too many candidate_labels: 257"):
        check_pairs(1, 257, max_items=256, max_queued_items=4096)
    with pytest.raises(TooLarge, match="29 texts x 200 candidate_labels make 5800"):
        check_pairs(29, 200, max_items=256, max_queued_items=4096)


def test_an_answer_over_a_limit_is_refused_before_any_work():
    from pipeserve.server.errors import TooLarge
    from pipeserve.server.pipeline.validation import check_answer_bytes

    shapes = {"logits": (30522,), "pooler_output": (32,)}
    check_answer_bytes(2, 8, shapes, {"logits"}, 2, 1 << 20)
    with pytest.raises(TooLarge, match=r"logits alone is 2 x 8 x 30522 x 4 bytes.*--max-message"):
        check_answer_bytes(2, 8, shapes, {"logits"}, 4, 1 << 20)
    # protobuf cannot hold 2 GiB, whatever the flag allows.
    with pytest.raises(TooLarge, match="the 2147483647 bytes a protobuf message holds"):
        check_answer_bytes(256, 256, shapes, {"logits"}, 4, 1 << 40)


def test_an_unknown_activation_is_still_refused(tmp_path, minilm_path):
    from pipeserve.server.errors import UnsupportedByModel
    from pipeserve.server.model.served import require_rpc, served_rpcs

    path = save_cross_encoder(
        tmp_path / "ce", minilm_path, sbert_ce_default_activation_function="torch.nn.Tanh"
    )
    card = _card(path)
    assert card.cross_encoder_activation == "torch.nn.Tanh"
    assert "Rerank" not in served_rpcs(card)
    with pytest.raises(UnsupportedByModel, match=r"torch\.nn\.Tanh"):
        require_rpc("Rerank", card)
