"""The Node.js example (examples/node/client.js) gets the same answers as the Python client.

Needs `node` and the example's locked dependencies, which the test never installs itself (tests
use no network): `npm ci --prefix examples/node` once, as .ci/run does. Skipped without them
locally, failed without them in CI.
"""

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeserve.client import Client
from tests.conftest import SEED_SENTENCES, require, require_tool

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "node"
# Non-ASCII text checks that argv and the strings on the wire stay UTF-8.
TEXTS = [*SEED_SENTENCES, "Ça marche très bien, naïve café 👍"]
OUTPUTS = ["logits", "last_hidden_state"]
HEAD = 6  # values client.js prints per tensor without --full


# Session scope: checked before the session server starts for nothing.
@pytest.fixture(scope="session")
def node_example() -> Path:
    require_tool("node")
    require(
        (EXAMPLE / "node_modules").is_dir(),
        "examples/node has no node_modules: run `npm ci --prefix examples/node`",
    )
    return EXAMPLE / "client.js"


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


# decodeTensor on tensors given as hex; the Buffer starts one byte into its memory, unaligned, as
# grpc-js hands `bytes` fields over. Non-finite values and -0 print as strings (JSON has no NaN
# and writes -0 as 0).
DECODE = """
const { decodeTensor } = require(process.argv[1]);
const tensors = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
console.log(JSON.stringify(tensors.map(({ dtype, shape, hex }) => {
  const data = Buffer.from('00' + hex, 'hex').subarray(1);
  const { values } = decodeTensor({ dtype, shape, data });
  return values.map((v) => (Object.is(v, -0) ? '-0' : Number.isFinite(v) ? v : String(v)));
})));
"""


def test_node_decode_tensor_reads_every_dtype_and_every_half(node_example):
    """Every float16 bit pattern (zeros, subnormals, infinities, NaNs), and the other dtypes."""
    rng = np.random.default_rng(0)
    arrays = {
        "DTYPE_FLOAT16": np.arange(2**16, dtype="<u2").view("<f2").reshape(256, 256),
        "DTYPE_FLOAT32": np.concatenate(
            [rng.standard_normal(997), [0.0, -0.0, 1e-45, 3.4e38, np.inf, -np.inf, np.nan]]
        ).astype("<f4"),
        "DTYPE_INT32": np.array([0, 1, -1, 2**31 - 1, -(2**31)], dtype="<i4").reshape(5, 1),
        "DTYPE_INT64": np.array([0, 30521, -7, 2**53 - 1, -(2**53)], dtype="<i8"),
    }
    tensors = [
        {"dtype": dtype, "shape": list(array.shape), "hex": array.tobytes().hex()}
        for dtype, array in arrays.items()
    ]
    done = subprocess.run(
        ["node", "-e", DECODE, str(node_example)],
        input=json.dumps(tensors),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for (dtype, array), values in zip(arrays.items(), json.loads(done.stdout), strict=True):
        decoded = np.array([float(v) for v in values])  # float("NaN"), float("-0"), ...
        expected = array.astype(np.float64).ravel()
        np.testing.assert_array_equal(decoded, expected, err_msg=dtype)
        # -0.0 == 0.0 above, so compare signs too (a NaN's sign means nothing in JS).
        numbers = ~np.isnan(expected)
        np.testing.assert_array_equal(
            np.signbit(decoded[numbers]), np.signbit(expected[numbers]), err_msg=dtype
        )
