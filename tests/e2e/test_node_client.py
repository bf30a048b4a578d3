"""The Node.js example (examples/node/client.js) gets the same answers as the Python client.

Needs `node` and the example's locked dependencies, which the test never installs itself (tests
use no network): `npm ci --prefix examples/node` once, as .ci/run does. Skipped without them
locally, failed without them in CI. Its tensor decoding alone: tests/unit/test_node_client.py."""

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeserve.client import Client
from tests.helpers import SEED_SENTENCES

# Non-ASCII text checks that argv and the strings on the wire stay UTF-8.
TEXTS = [*SEED_SENTENCES, "Ça marche très bien, naïve café 👍"]
OUTPUTS = ["logits", "last_hidden_state"]
HEAD = 6  # values client.js prints per tensor without --full


def run_node(script: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(["node", str(script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"client.js failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def labels(results) -> list[list[dict[str, Any]]]:
    return [[{"label": s.label, "score": s.score, "index": s.index} for s in r] for r in results]


def assert_same_labels(node: list[list[dict]], python: list[list[dict]]) -> None:
    assert [[(s["label"], s["index"]) for s in r] for r in node] == [
        [(s["label"], s["index"]) for s in r] for r in python
    ]
    for node_item, python_item in zip(node, python, strict=True):
        for node_score, python_score in zip(node_item, python_item, strict=True):
            assert node_score["score"] == pytest.approx(python_score["score"], abs=1e-6)


def test_node_client_matches_python_client(node_example, address, client: Client):
    node = run_node(node_example, address, "--full", *TEXTS)

    encodings = client.tokenize(TEXTS)
    assert node["tokenize"] == [
        {"input_ids": e.input_ids, "attention_mask": e.attention_mask} for e in encodings
    ]

    assert_same_labels(node["classify"], labels(client.classify(TEXTS, top_k=None)))
    timings = node["classify_timings"]
    assert set(timings) == {"tokenize_ms", "queue_ms", "forward_ms", "postprocess_ms"}
    assert timings["forward_ms"] > 0 and timings["postprocess_ms"] > 0

    requests = [(f"text-{i}", [text]) for i, text in enumerate(TEXTS)] + [("empty", [""])]
    python_stream = {r.id: r for r in client.classify_stream(requests)}
    assert set(node["classify_stream"]) == set(python_stream)
    for stream_id, result in python_stream.items():
        answer = node["classify_stream"][stream_id]
        if result.error is not None:
            assert answer == {
                "error": {"code": result.error.code.value[0], "message": result.error.details}
            }
        else:
            assert_same_labels(answer["results"], labels(result.results))
    assert node["classify_stream"]["empty"]["error"]["code"] == 3  # INVALID_ARGUMENT

    for dtype, wire in [("float32", "DTYPE_FLOAT32"), ("float16", "DTYPE_FLOAT16")]:
        python = client.forward(TEXTS, outputs=OUTPUTS, dtype=dtype)
        node_forward = node["forward"][dtype]
        assert node_forward["sequence_lengths"] == python.sequence_lengths.tolist()
        assert list(node_forward["outputs"]) == OUTPUTS
        for name in OUTPUTS:
            tensor = node_forward["outputs"][name]
            assert python[name].dtype == np.dtype(dtype)
            assert tensor["dtype"] == wire
            assert tensor["shape"] == list(python[name].shape)
            np.testing.assert_allclose(
                np.array(tensor["values"], dtype=np.float64),
                python[name].astype(np.float64).ravel(),
                rtol=0,
                atol=1e-6,
                err_msg=f"{dtype} {name}",
            )


def test_node_client_defaults_print_the_first_values(node_example, address, client: Client):
    """As the example's README runs it: the target only, the built-in texts, a few values."""
    node = run_node(node_example, address)

    assert node["target"] == address
    assert [e["input_ids"] for e in node["tokenize"]] == [
        e.input_ids for e in client.tokenize(SEED_SENTENCES)
    ]
    for dtype in ("float32", "float16"):
        python = client.forward(SEED_SENTENCES, outputs=OUTPUTS, dtype=dtype)
        for name in OUTPUTS:
            tensor = node["forward"][dtype]["outputs"][name]
            assert "values" not in tensor
            np.testing.assert_allclose(
                tensor["head"], python[name].astype(np.float64).ravel()[:HEAD], rtol=0, atol=1e-6
            )


def test_node_client_embeds_as_the_python_client(node_example, minilm_server):
    """Embed's bytes, decoded in Node, are the Python client's embeddings, in both dtypes."""
    node = run_node(node_example, minilm_server.address, "--embed", "--full", *TEXTS)
    with Client(minilm_server.address, timeout=60) as python_client:
        lengths = [len(e.input_ids) for e in python_client.tokenize(TEXTS, padding=False)]
        # Two calls of the same texts: equal but for float rounding (and one float16 step).
        for dtype, wire, atol in [
            ("float32", "DTYPE_FLOAT32", 1e-6),
            ("float16", "DTYPE_FLOAT16", 1e-3),
        ]:
            python = python_client.embed(TEXTS, dtype=dtype)
            embedded = node["embed"][dtype]
            assert (embedded["dtype"], embedded["shape"]) == (wire, list(python.shape))
            assert embedded["sequence_lengths"] == lengths
            np.testing.assert_allclose(
                np.array(embedded["embeddings"]), python.astype(np.float64), rtol=0, atol=atol
            )
