"""Wire helpers that the client and the server share, so both read the bytes the same way:
tensors as raw little-endian bytes with dtype and shape, status codes by number, the metadata
keys the .proto declares (TrailingMetadataKey), and the option names its enums define.
"""

import grpc
import numpy as np
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from pipeserve.v1 import pipeserve_pb2 as pb

_NUMPY_BY_DTYPE = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_FLOAT16: np.dtype("<f2"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_INT32: np.dtype("<i4"),
}
_DTYPE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in _NUMPY_BY_DTYPE.items()}
_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def metadata_key(key: "pb.TrailingMetadataKey.ValueType") -> str:
    """The metadata key a TrailingMetadataKey value stands for (its metadata_key option)."""
    value = pb.TrailingMetadataKey.DESCRIPTOR.values_by_number[key]
    return value.GetOptions().Extensions[pb.metadata_key]


RETRY_AFTER_KEY = metadata_key(pb.TRAILING_METADATA_KEY_RETRY_AFTER_MS)
# Where gRPC's rich error model puts a failed call's google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def enum_choices(enum: EnumTypeWrapper) -> dict[str, int]:
    """A .proto enum's values by name: lower-case, without the enum's prefix, the UNSPECIFIED
    value left out (FUNCTION_TO_APPLY_SOFTMAX -> "softmax"). The names the client takes, the
    CLI offers and the server maps to its own enums, so none of them lists an option twice."""
    zero = enum.DESCRIPTOR.values_by_number[0].name
    prefix = zero[: zero.rindex("_") + 1]
    return {
        value.name.removeprefix(prefix).lower(): value.number
        for value in enum.DESCRIPTOR.values
        if not value.name.endswith("_UNSPECIFIED")
    }


SCORE_FUNCTIONS = enum_choices(pb.FunctionToApply)
AGGREGATION_STRATEGIES = enum_choices(pb.AggregationStrategy)
WINDOW_AGGREGATIONS = enum_choices(pb.WindowAggregation)
PADDINGS = enum_choices(pb.Padding)
# The stages of Timings, in the order they run: "tokenize", "queue", "forward", "postprocess".
STAGES = tuple(field.name.removesuffix("_ms") for field in pb.Timings.DESCRIPTOR.fields)


def status_code(number: int) -> grpc.StatusCode:
    """The StatusCode for its number on the wire (UNKNOWN for numbers gRPC does not define)."""
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def to_proto(array: np.ndarray) -> pb.Tensor:
    """Encodes `array` (float32, float16, int64 or int32) as a Tensor."""
    code = _DTYPE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(f"unsupported tensor dtype {array.dtype}")
    data = np.ascontiguousarray(array, dtype=_NUMPY_BY_DTYPE[code]).tobytes()
    return pb.Tensor(dtype=code, shape=array.shape, data=data)


def from_proto(tensor: pb.Tensor) -> np.ndarray:
    """Decodes a Tensor into a numpy array in native byte order."""
    dtype = _NUMPY_BY_DTYPE.get(tensor.dtype)
    if dtype is None:
        raise ValueError(f"unknown tensor dtype {tensor.dtype}")
    shape = tuple(tensor.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise ValueError(
            f"tensor data has {len(tensor.data)} bytes; shape {shape} of {dtype} needs {expected}"
        )
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
