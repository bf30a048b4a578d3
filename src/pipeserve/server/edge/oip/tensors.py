"""An inference request's tensors read into numpy arrays and the answer's written back: typed
`contents` or `raw_input_contents` in, and out in the form the request came in (tritonclient
sends and reads raw contents, a hand-written JSON request typed ones). A BYTES tensor's raw
form is each element as a 4-byte little-endian length and its bytes."""

import struct
from dataclasses import dataclass

import numpy as np

from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.server.errors import InvalidInput

# The protocol's datatypes that a request may carry -> numpy dtype and the typed field.
_NUMERIC = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "INT8": (np.dtype("<i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "UINT8": (np.dtype("<u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """An input as sent: its datatype and shape; `values` a numpy array of the datatype, or
    for BYTES a flat list of the elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray | list[bytes]


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    elements, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise InvalidInput(f"input {name!r}: raw BYTES contents end inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, at)
        if at + 4 + length > len(raw):
            raise InvalidInput(f"input {name!r}: raw BYTES element runs past the contents' end")
        elements.append(raw[at + 4 : at + 4 + length])
        at += 4 + length
    return elements


def _read(
    tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray | list[bytes]:
    name, datatype = tensor.name, tensor.datatype
    if datatype == "BYTES":
        return _split_bytes(name, raw) if raw is not None else list(tensor.contents.bytes_contents)
    if datatype not in _NUMERIC:
        known = ", ".join(["BYTES", *_NUMERIC])
        raise InvalidInput(f"input {name!r}: datatype {datatype!r} is not one of {known}")
    dtype, field = _NUMERIC[datatype]
    if raw is None:
        try:
            return np.asarray(getattr(tensor.contents, field), dtype=dtype)
        except OverflowError:
            raise InvalidInput(f"input {name!r} holds a value outside {datatype}") from None
    if len(raw) % dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} raw bytes are not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype)


def read_inputs(request: oip.ModelInferRequest) -> dict[str, Tensor]:
    """The request's inputs by name, each checked against its shape."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
            "send every input raw or none"
        )
    tensors: dict[str, Tensor] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in tensors:
            raise InvalidInput(f"input {tensor.name!r} is sent twice")
        shape = tuple(tensor.shape)
        if any(size < 0 for size in shape):
            raise InvalidInput(f"input {tensor.name!r}: shape {list(shape)} has a negative size")
        values = _read(tensor, raw[index] if raw else None)
        count = int(np.prod(shape, dtype=np.int64))
        if len(values) != count:
            raise InvalidInput(
                f"input {tensor.name!r}: shape {list(shape)} holds {count} elements; "
                f"{len(values)} were sent"
            )
        tensors[tensor.name] = Tensor(tensor.name, tensor.datatype, shape, values)
    return tensors


def add_output(response: oip.ModelInferResponse, name: str, array: np.ndarray, raw: bool) -> None:
    """Appends `array` as output `name`: BYTES for an array of str (UTF-8), FP32 otherwise."""
    output = response.outputs.add(name=name, shape=array.shape)
    if array.dtype.kind in "OUS":
        output.datatype = "BYTES"
        elements = [element.encode() for element in array.reshape(-1)]
        if raw:
            response.raw_output_contents.append(
                b"".join(_LENGTH.pack(len(e)) + e for e in elements)
            )
        else:
            output.contents.bytes_contents.extend(elements)
        return
    dtype, field = _NUMERIC["FP32"]
    output.datatype = "FP32"
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if raw:
        response.raw_output_contents.append(flat.tobytes())
    else:
        getattr(output.contents, field).extend(flat.tolist())
