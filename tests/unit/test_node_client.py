"""The Node.js example's tensor decoding (examples/node/client.js, decodeTensor): every dtype,
and both halves of the 16-bit floats, as numpy reads them.

Needs `node` and the example's locked dependencies (`npm ci --prefix examples/node`, as
.ci/run does); skipped without them locally, failed without them in CI. Against a server:
tests/e2e/test_node_client.py."""

import json
import subprocess

import numpy as np

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
