"""The `pipeserve` console command against the real session server, as a shell user runs it:
one JSON document on stdout, exit status 1 and `error: CODE: details` on stderr when refused."""

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest

from pipeserve.client import Client
from tests.helpers import SEED_SENTENCES
from tests.servers import pipeserve

HIDDEN_SIZE = 32  # dim of the tiny DistilBERT (tests/checkpoints.py)


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
        assert set(row[0]) == {"label", "score", "index"}
        assert [item["index"] for item in row] == [s.index for s in labels]
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


def test_stream_prints_a_json_line_per_stdin_line(address: str, client: Client):
    texts = [*SEED_SENTENCES, "", "too long " * 6000, "Not bad."]
    result = pipeserve(
        "stream", "--target", address, "--top-k", "all", stdin="\n".join(texts) + "\n"
    )

    assert result.returncode == 1  # one line was refused
    assert result.stderr == "error: 1 of 4 requests refused\n"
    printed = {line["id"]: line for line in map(json.loads, result.stdout.splitlines())}
    # Ids are line numbers; the blank line 3 sent nothing. Results may come in any order.
    assert sorted(printed, key=int) == ["1", "2", "4", "5"]
    assert printed["4"]["error"]["code"] == "INVALID_ARGUMENT"
    assert "max_text_chars" in printed["4"]["error"]["details"]
    expected = client.classify([texts[0], texts[1], texts[4]], top_k=None)
    for line_id, labels in zip(("1", "2", "5"), expected, strict=True):
        assert [item["label"] for item in printed[line_id]["labels"]] == [s.label for s in labels]
        assert [item["index"] for item in printed[line_id]["labels"]] == [s.index for s in labels]


def test_stream_of_accepted_lines_exits_0(address: str):
    result = pipeserve("stream", "--target", address, stdin="good\nbad\n")

    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] in (
        ["1", "2"],
        ["2", "1"],
    )


def test_version():
    result = pipeserve("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pipeserve {version('pipeserve')}\n"
