"""Tiny random checkpoints whose outputs vary strongly with their input, one per task, and
checkpoints saved the ways older or other tools save them (the edge cases): each written to a
folder, with the real bert-base-uncased tokenizer."""

import json
import shutil
from pathlib import Path


def save_tiny(folder: Path, model, tokenizer_path: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(folder)
    return folder


def tiny_distilbert_classifier(seed: int, **config):
    """A two-layer DistilBERT sequence classifier with random weights (`seed`)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        # The default 0.02 gives logits below 1e-2 that hardly move with the input, so a
        # server that swapped two items' results would still match. 0.3 spreads the logits
        # over several units without saturating the softmax.
        initializer_range=0.3,
        **config,
    )
    return DistilBertForSequenceClassification(config).eval()


IDENTITY = "torch.nn.modules.linear.Identity"
TANH = "torch.nn.modules.activation.Tanh"


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
    return save_tiny(folder, model, tokenizer)


def save_cross_encoder(folder: Path, tokenizer: Path, seed: int = 5, **config) -> Path:
    """A one-label BERT pair classifier, random weights spread enough that scores differ."""
    return save_tiny_bert(
        folder, "BertForSequenceClassification", tokenizer, seed, num_labels=1, **config
    )


def save_tiny_roberta(folder: Path, tokenizer: Path) -> Path:
    """A RoBERTa classifier with 66 positions, numbered from padding_idx + 1 = 2, so it takes
    64 tokens; its tokenizer declares no model_max_length."""
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(7)
    config = RobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
        initializer_range=0.3,
        num_labels=2,
    )
    save_tiny(folder, RobertaForSequenceClassification(config).eval(), tokenizer)
    tokenizer_config = folder / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text())
    settings.pop("model_max_length", None)
    tokenizer_config.write_text(json.dumps(settings))
    assert AutoTokenizer.from_pretrained(folder).model_max_length > 10**6
    return folder


def save_lowercasing_minilm(folder: Path, minilm_path: Path) -> Path:
    """The real MiniLM saved the way an old sentence-transformers saved a lowercasing model:
    its Transformer settings in sentence_distilbert_config.json, do_lower_case on, and a
    tokenizer_args model_max_length that wins over max_seq_length."""
    shutil.copytree(minilm_path, folder)
    (folder / "sentence_bert_config.json").unlink()
    (folder / "sentence_distilbert_config.json").write_text(
        json.dumps(
            {
                "max_seq_length": 128,
                "do_lower_case": True,
                "tokenizer_args": {"model_max_length": 24},
            }
        )
    )
    return folder


def save_edge_models(folder: Path, minilm_path: Path) -> dict[str, Path]:
    """Checkpoints whose own files differ from the usual ones, by the name conftest's
    edge_server serves each under: cross-encoders whose activation is the identity, given in
    config.json's sentence_transformers key (`ce-identity`) or in the legacy key
    (`ce-legacy-identity`), or is one CrossEncoder would not apply (`ce-tanh`); a RoBERTa whose
    positions start past padding_idx (`roberta`); the real MiniLM saved as an old
    sentence-transformers saved a lowercasing model (`lowercasing`)."""
    identity, tanh = ({"sentence_transformers": {"activation_fn": f}} for f in (IDENTITY, TANH))
    legacy = {"sbert_ce_default_activation_function": IDENTITY}
    return {
        "ce-identity": save_cross_encoder(folder / "ce-identity", minilm_path, **identity),
        "ce-legacy-identity": save_cross_encoder(folder / "ce-legacy", minilm_path, **legacy),
        "ce-tanh": save_cross_encoder(folder / "ce-tanh", minilm_path, **tanh),
        "roberta": save_tiny_roberta(folder / "roberta", minilm_path),
        "lowercasing": save_lowercasing_minilm(folder / "lowercasing", minilm_path),
    }
