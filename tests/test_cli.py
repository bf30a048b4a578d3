"""The `pipeserve` console command against the real session server, as a shell user runs it:
one JSON document on stdout, exit status 1 and `error: CODE: details` on stderr when refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeserve.client import Client
from tests.conftest import SEED_SENTENCES

HIDDEN_SIZE = 32  # dim of the tiny DistilBERT in conftest


def _command() -> list[str]:
    """The installed console script of this environment, else the module."""
    beside_python = Path(sys.executable).with_name("pipeserve")
    if beside_python.exists():
        return [str(beside_python)]
    on_path = shutil.which("pipeserve")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "pipeserve.client.cli"]


PIPESERVE = _command()


def pipeserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PIPESERVE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def json_output(result: subprocess.CompletedProcess) -> object:
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one document, one line
    return json.loads(result.stdout)


def test_tokenize_prints_the_clients_encodings(address: str, client: Client):
    printed = json_output(pipeserve("tokenize", "--target", address, *SEED_SENTENCES))

    expected = client.tokenize(SEED_SENTENCES)
    assert [e["input_ids"] for e in printed] == [e.input_ids for e in expected]
    assert printed == [e.to_dict() for e in expected]


def test_target_can_come_from_the_environment(address: str, client: Client):
    result = pipeserve("tokenize", "hello world", env={"PIPESERVE_TARGET": address})
    printed = json_output(result)
    assert printed[0]["input_ids"] == client.tokenize(["hello world"])[0].input_ids


def test_classify_prints_labels_and_scores(address: str, client: Client):
    printed = json_output(
        pipeserve("classify", "--target", address, "--top-k", "all", *SEED_SENTENCES)
    )

    expected = client.classify(SEED_SENTENCES, top_k=None)
    assert [[item["label"] for item in row] for row in printed] == [
        [s.label for s in row] for row in expected
    ]
    for row, labels in zip(printed, expected, strict=True):
        assert set(row[0]) == {"label", "score"}
        assert [item["score"] for item in row] == pytest.approx([s.score for s in labels], abs=1e-3)

    best_only = json_output(pipeserve("classify", "--target", address, SEED_SENTENCES[0]))
    assert [[item["label"] for item in row] for row in best_only] == [[expected[0][0].label]]


def test_info_prints_the_model(address: str, tiny_distilbert: Path):
    info = json_output(pipeserve("info", "--target", address))

    config = json.loads((tiny_distilbert / "config.json").read_text())
    assert info["model"] == str(tiny_distilbert)
    assert info["task"] == "text-classification"
    assert info["architecture"] == "DistilBertForSequenceClassification"
    assert info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["max_length"] == config["max_position_embeddings"]
    assert info["vocab_size"] == config["vocab_size"]
    assert info["hidden_size"] == HIDDEN_SIZE
    assert "logits" in info["outputs"]
    assert len(info["workers"]) == 2


def test_forward_summary_prints_shapes_not_values(address: str, client: Client):
    printed = json_output(
        pipeserve(
            "forward",
            "--target",
            address,
            "--summary",
            "--outputs",
            "logits,last_hidden_state",
            *SEED_SENTENCES,
        )
    )

    lengths = [len(e.input_ids) for e in client.tokenize(SEED_SENTENCES, padding="do_not_pad")]
    assert printed["sequence_lengths"] == lengths
    assert printed["outputs"] == {
        "logits": {"shape": [2, 2], "dtype": "float32"},
        "last_hidden_state": {"shape": [2, max(lengths), HIDDEN_SIZE], "dtype": "float32"},
    }


def test_refused_call_exits_1_with_the_status_on_stderr(address: str):
    result = pipeserve("tokenize", "--target", address, "")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "inputs[0].text" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_lists_the_server_flags():
    result = pipeserve("serve", "--help")

    assert result.returncode == 0, result.stderr
    assert "--max-batch-tokens" in result.stdout
    assert "PIPESERVE_MAX_BATCH_TOKENS" in result.stdout
