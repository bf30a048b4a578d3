"""Calls larger than the server's limits: the clients and the CLI send them as requests within
the limits (ModelInfo's max_items_per_request, max_tokens_per_request), a few at a time, and
return what one request would, in input order. Texts the wire cannot carry, or files that are
not UTF-8, are refused naming the text or the file's line.

On a server with small limits (`small`), answers must equal the session server's to the same
texts sent whole; on the session server (default limits), the issue's sizes: the 872 SST-2
sentences from `pipeserve classify --file`, 10,000 texts from Client.classify. The Node example
splits too, and sends its token. The splitting itself: tests/unit/test_splitting.py."""

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeserve.client import AsyncClient, Client, PipeserveError
from tests.helpers import ROOT, require, require_tool, sst2_sentences
from tests.servers import PIPESERVE, ServerProcess, launch_server, pipeserve

MAX_ITEMS = 8
MAX_TOKENS = 200
TOKEN = "split-token"
ATOL = 1e-5


@pytest.fixture(scope="module")
def small(tiny_distilbert, tmp_path_factory) -> Iterator[ServerProcess]:
    """The tiny classifier with small limits, 8 items and 200 tokens a request, and a token
    (which the limits are asked with)."""
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text(TOKEN + "\n")
    process = launch_server(
        tiny_distilbert,
        "--max-items-per-request", str(MAX_ITEMS),
        "--max-tokens-per-request", str(MAX_TOKENS),
        "--auth-token-file", str(tokens),
    )  # fmt: skip
    yield process
    process.stop()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sst2_sentences(60)


def assert_same_labels(got, expected) -> None:
    assert [[s.label for s in labels] for labels in got] == [
        [s.label for s in labels] for labels in expected
    ]
    for labels, wanted in zip(got, expected, strict=True):
        np.testing.assert_allclose([s.score for s in labels], [s.score for s in wanted], atol=ATOL)


@pytest.mark.slow
def test_sync_and_async_calls_over_the_limits_equal_one_request(small, client, texts):
    whole = client.classify(texts, top_k=None)
    with Client(small.address, timeout=60, token=TOKEN) as parted:
        assert_same_labels(parted.classify(texts, top_k=None), whole)

    async def both() -> list:
        async with AsyncClient(
            small.address, timeout=60, token=TOKEN, split_concurrency=2
        ) as parted:
            return await parted.classify(texts, top_k=None)

    assert_same_labels(asyncio.run(both()), whole)


@pytest.mark.slow
def test_split_forward_and_tokenize_equal_one_request(small, client, texts):
    with Client(small.address, timeout=60, token=TOKEN) as parted:
        output = parted.forward(texts, outputs=["last_hidden_state", "logits"])
        expected = client.forward(texts, outputs=["last_hidden_state", "logits"])
        assert output.sequence_lengths.tolist() == expected.sequence_lengths.tolist()
        assert output.last_hidden_state.shape == expected.last_hidden_state.shape
        np.testing.assert_allclose(output.last_hidden_state, expected.last_hidden_state, atol=ATOL)
        for padding in ("longest", "do_not_pad", "max_length"):
            asked = {"padding": padding, "return_tokens": True, "max_length": 64}
            assert parted.tokenize(texts, **asked) == client.tokenize(texts, **asked), padding
        unmasked = {"return_attention_mask": False, "return_offsets": True}
        assert parted.tokenize(texts, **unmasked) == client.tokenize(texts, **unmasked)


@pytest.mark.slow
def test_a_failing_part_fails_the_call_naming_where(small):
    # Short texts: the item limit cuts them, 8 a request.
    bad = [f"text {i}" for i in range(20)] + [""] + [f"text {i}" for i in range(20, 30)]
    with (
        Client(small.address, timeout=60, token=TOKEN) as parted,
        pytest.raises(PipeserveError) as error,
    ):
        parted.classify(bad)
    assert error.value.code.name == "INVALID_ARGUMENT"
    # The server numbers the items of its request; the message says which of the call's it was.
    assert "inputs[4].text" in error.value.details
    assert "inputs[16:24]" in error.value.details


@pytest.mark.slow
def test_split_concurrency_0_sends_the_call_whole(small, texts):
    refused = pytest.raises(PipeserveError, match=f"max_items_per_request={MAX_ITEMS}")
    with Client(small.address, timeout=60, token=TOKEN, split_concurrency=0) as whole, refused:
        whole.classify(texts)


def in_process_scores(path: Path, texts: list[str]) -> np.ndarray:
    """The classifier's softmax scores of `texts` in-process, by index of label, in batches."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        batches = (
            model(**tokenizer(texts[i : i + 256], padding=True, return_tensors="pt")).logits
            for i in range(0, len(texts), 256)
        )
        return np.concatenate([logits.softmax(-1).numpy() for logits in batches])


def by_index(labels) -> list[float]:
    return [score for _, score in sorted((s["index"], s["score"]) for s in labels)]


def test_the_cli_classifies_the_872_sst2_sentences_in_order(address, tiny_distilbert, tmp_path):
    sentences = sst2_sentences()
    assert len(sentences) == 872
    (tmp_path / "dev.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    result = pipeserve(
        "classify", "--target", address, "--top-k", "all", "--file", str(tmp_path / "dev.txt")
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)

    assert len(printed) == 872
    got = np.array([by_index(labels) for labels in printed])
    np.testing.assert_allclose(got, in_process_scores(tiny_distilbert, sentences), atol=ATOL)


@pytest.mark.slow
def test_client_classify_of_10000_texts_keeps_their_order(client, tiny_distilbert):
    # Distinct texts, so that a result given to the wrong one would show.
    corpus = sst2_sentences()
    texts = [f"{corpus[i % len(corpus)]} {i}" for i in range(10_000)]
    results = client.classify(texts, top_k=None)

    assert len(results) == len(texts)
    got = np.array([by_index([s.to_dict() for s in labels]) for labels in results])
    np.testing.assert_allclose(got, in_process_scores(tiny_distilbert, texts), atol=ATOL)


def test_a_file_that_is_not_utf8_is_named_with_its_line(address, tmp_path):
    latin1 = tmp_path / "reviews.txt"
    latin1.write_bytes("fine\nok\ncaf\xe9 au lait\n".encode("latin-1"))
    for command in ("classify", "embed", "tokenize"):
        result = pipeserve(command, "--target", address, "--file", str(latin1))
        assert result.returncode == 2
        assert result.stderr == (
            f"error: {latin1} line 3 is not UTF-8 (byte 0xe9 at column 4); convert it, e.g. "
            "with iconv -f latin1 -t utf-8\n"
        )
    streamed = subprocess.run(
        [*PIPESERVE, "stream", "--target", address],
        input=latin1.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert streamed.returncode == 2
    assert b"error: stdin line 3 is not UTF-8" in streamed.stderr
    assert b"Traceback" not in streamed.stderr
    # The lines before it were classified.
    ids = [json.loads(line)["id"] for line in streamed.stdout.splitlines()]
    assert sorted(ids) == ["1", "2"]


def test_a_text_the_wire_cannot_carry_is_named(client):
    surrogate = "caf\udce9"  # what surrogateescape makes of Latin-1's é
    with pytest.raises(ValueError, match=r"inputs\[1\]: character '\\udce9' at position 3"):
        client.classify(["fine", surrogate])
    feed = client.classify_stream([("a", ["fine"]), ("b", [surrogate])])
    answered = []
    with pytest.raises(ValueError, match=r"stream request 'b': inputs\[0\]: character"):
        answered.extend(result.id for result in feed)
    assert answered == ["a"]  # the request before it was answered


@pytest.mark.slow
def test_the_node_example_splits_and_sends_its_token(small, client, texts):
    # Short texts, as the example splits by items alone: 8 of them stay within the tokens.
    require_tool("node")
    example = ROOT / "examples" / "node"
    require(
        (example / "node_modules").is_dir(),
        "examples/node has no node_modules: run `npm ci --prefix examples/node`",
    )
    twenty = [" ".join(text.split()[:5]) for text in texts[:20]]
    done = subprocess.run(
        ["node", str(example / "client.js"), small.address, "--full", "--token", TOKEN, *twenty],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    node = json.loads(done.stdout)

    assert node["classify_requests"] == 3  # 8 + 8 + 4
    expected = client.classify(twenty, top_k=None)
    assert [[s["label"] for s in labels] for labels in node["classify"]] == [
        [s.label for s in labels] for labels in expected
    ]
    got = [[s["score"] for s in labels] for labels in node["classify"]]
    np.testing.assert_allclose(got, [[s.score for s in labels] for labels in expected], atol=ATOL)
    # Forward's requests joined as one: per-token outputs padded to the longest text of all.
    outputs = ["logits", "last_hidden_state"]
    whole = client.forward(twenty, outputs=outputs)
    joined = node["forward"]["float32"]
    assert joined["sequence_lengths"] == whole.sequence_lengths.tolist()
    for name in outputs:
        assert joined["outputs"][name]["shape"] == list(whole[name].shape)
        values = joined["outputs"][name]["values"]
        np.testing.assert_allclose(values, whole[name].ravel(), atol=ATOL)
    refused = subprocess.run(
        ["node", str(example / "client.js"), small.address], capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: code 16: ")  # UNAUTHENTICATED
