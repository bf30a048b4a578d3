"""Fuzzing the public RPCs with hypothesis against a real server process.

Requests are built with the generated protos and sent with the raw generated stub
(`InferenceStub`), so nothing on the client side filters them. Strings that protobuf Python
refuses to serialize (lone surrogates, invalid UTF-8) are built with a "bytes twin" of the
generated messages, where every `string` field is a `bytes` field with the same number (the
same wire format), and sent as raw bytes with `channel.unary_unary` / `stream_stream`.

Properties checked on every request:

* the call ends OK or with INVALID_ARGUMENT / RESOURCE_EXHAUSTED / FAILED_PRECONDITION: never
  INTERNAL, UNKNOWN, UNAVAILABLE, or a hang (each call has a timeout, and DEADLINE_EXCEEDED
  fails the test unless the request was legitimately huge);
* a request that breaks a documented rule (no inputs, too many items, an empty or over-long
  text, bad token ids, an unknown enum number, max_length above the model's, top_k with
  all_labels, window_aggregation without stride, an unknown output name) is never answered
  OK, and undecodable bytes answer INVALID_ARGUMENT;
* an OK response is well-formed: one result per input, tensor byte sizes match dtype x shape,
  labels and scores as asked;
* a request that breaks none of them (nor a limit that tokenizing reveals, checked with the same
  tokenizer in-process) is answered OK;
* after each test the server process is alive and a known-good Classify returns the same
  scores as before the fuzzing.

The number of examples, shared among the RPCs, comes from PIPESERVE_FUZZ_EXAMPLES (default
300, for CI). The nightly run is:

    PIPESERVE_FUZZ_EXAMPLES=10000 python -m pytest tests/e2e/test_fuzz.py

Runs are derandomized (no example database), so a CI failure reproduces locally. With -s each
test prints how many requests were sent so far and how they ended.
"""

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import SEED_SENTENCES, assert_classified_alike
from tests.servers import (
    LIMITED_CHARS,
    LIMITED_ITEMS,
    LIMITED_MESSAGE_BYTES,
    LIMITED_TOKENS,
    ServerProcess,
)

EXAMPLES = int(os.environ.get("PIPESERVE_FUZZ_EXAMPLES", "300"))
# Each RPC's share of EXAMPLES.
SHARES = {
    "tokenize": 0.2,
    "forward": 0.2,
    "classify": 0.2,
    "stream": 0.1,
    "model_info": 0.05,
    "mutated": 0.25,
}

# The tiny DistilBERT of tests/checkpoints.py (checked against ModelInfo before fuzzing).
VOCAB = 30522
MAX_LENGTH = 512
LABELS = ["NEGATIVE", "POSITIVE"]

CALL_TIMEOUT = 30.0
# A request this big (bytes on the wire, or items) may legitimately run out of time.
HUGE_BYTES = 1024 * 1024
HUGE_ITEMS = 10_000

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32_MAX = 2**32 - 1

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ALLOWED = {
    OK,
    INVALID,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
ALLOWED_STREAM_ERRORS = {c.value[0] for c in ALLOWED - {OK}}
SERVICE = "/pipeserve.v1.Inference/"

# Hundreds of generated requests per RPC: the full suite's, not the fast lane's.
pytestmark = [pytest.mark.timeout(300 + EXAMPLES // 4), pytest.mark.slow]


# --- The bytes twin of the generated messages ---------------------------------------------------


def _add_with_imports(pool: descriptor_pool.DescriptorPool, files) -> None:
    """Adds the files the .proto imports (descriptor.proto, google/rpc/status.proto...)."""
    for file in files:
        _add_with_imports(pool, file.dependencies)
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            imported = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(imported)
            pool.Add(imported)


def _bytes_twin() -> dict[str, type]:
    """The generated file's messages again, with every string field turned into bytes.

    Field numbers and wire types are unchanged (strings and bytes are both length-delimited),
    so a twin serializes to exactly what the real message would, but accepts any bytes where
    the real one insists on valid UTF-8."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    real, twin = f".{proto.package}.", ".pipeserve.fuzztwin."
    proto.name = "pipeserve/fuzztwin/pipeserve.proto"
    proto.package = twin.strip(".")
    del proto.service[:]
    for message in proto.message_type:
        for fld in message.field:
            if fld.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            if fld.type_name:
                fld.type_name = fld.type_name.replace(real, twin)
    pool = descriptor_pool.DescriptorPool()
    _add_with_imports(pool, pb.DESCRIPTOR.dependencies)
    pool.Add(proto)
    classes = message_factory.GetMessageClassesForFiles([proto.name], pool)
    return {name.rsplit(".", 1)[1]: cls for name, cls in classes.items()}


W = _bytes_twin()


# --- Strategies: request bytes ------------------------------------------------------------------


class Wire(bytes):
    """Serialized request bytes that hypothesis reports by size and head, not in full (a huge
    request would print megabytes)."""

    def __repr__(self) -> str:
        head = bytes(self[:120])
        return f"Wire({head!r}{'...' if len(self) > 120 else ''}, {len(self)} bytes)"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


class Chaos:
    """How wild one request is: every field tame (valid by the docs), each field wild now and
    then (one or two faults in an otherwise valid request), or every field wild."""

    def __init__(self, draw: Callable, level: int) -> None:
        self.draw = draw
        self.level = level

    def wild(self) -> bool:
        if self.level == 0:
            return False
        return self.level == 2 or self.draw(st.integers(0, 7)) == 0

    def pick(self, tame: st.SearchStrategy, wild: st.SearchStrategy) -> Any:
        return self.draw(wild if self.wild() else tame)


chaos_level = st.sampled_from([0, 0, 1, 1, 2])

WORDS = [*" ".join(SEED_SENTENCES).split(), "the", "movie", "was", "great", "terrible", "naïve"]
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",  # overlong NUL
    b"\xe2\x82",  # truncated sequence
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\x80",  # lone continuation byte
    "\ud800".encode("utf-8", "surrogatepass"),
    "\udfff".encode("utf-8", "surrogatepass"),
]

unicode_text = st.text(st.characters(codec="utf-8"), max_size=40)
control_text = st.text(
    st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs"], codec="utf-8"),
    min_size=1,
    max_size=20,
)
words_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join)
repeat_char = st.sampled_from(["a", "word ", "中", "é", "\U0001f600", "\u0301", "\x00", " "])


def _repeated(sizes: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        lambda char, n: (char * n)[: max(n, 1)],
        repeat_char | st.characters(codec="utf-8"),
        sizes,
    )


@st.composite
def surrogate_text(draw) -> bytes:
    """Valid text around a lone surrogate, encoded as protobuf Python never would."""
    head, tail = draw(unicode_text), draw(unicode_text)
    lone = draw(st.characters(categories=["Cs"]))
    return (head + lone + tail).encode("utf-8", "surrogatepass")


@st.composite
def bad_utf8_text(draw) -> bytes:
    head, tail = draw(unicode_text), draw(unicode_text)
    return head.encode() + draw(st.sampled_from(INVALID_UTF8)) + tail.encode()


tame_text = st.one_of(
    words_text,
    words_text,
    unicode_text.filter(bool),
    control_text,
    _repeated(st.sampled_from([LIMITED_CHARS - 1, LIMITED_CHARS]) | st.integers(1, LIMITED_CHARS)),
).map(str.encode)
wild_text = st.one_of(
    st.just(b""),
    _repeated(st.sampled_from([LIMITED_CHARS + 1, 10 * LIMITED_CHARS])).map(str.encode),
    surrogate_text(),
    bad_utf8_text(),
    st.binary(max_size=16),
)

tame_id = st.integers(0, VOCAB - 1) | st.sampled_from([0, 101, 102, VOCAB - 1])
wild_id = st.sampled_from([-1, VOCAB, *INT64]) | st.integers(*INT64)
near_limit = st.sampled_from([MAX_LENGTH - 1, MAX_LENGTH])


@st.composite
def token_ids(draw, chaos: Chaos):
    if draw(st.integers(0, 4)):
        ids = draw(st.lists(tame_id, min_size=1, max_size=24))
        if chaos.wild():
            ids[draw(st.integers(0, len(ids) - 1))] = draw(wild_id)
    else:  # long: at the model's limit, or over it
        length = chaos.pick(near_limit, st.sampled_from([0, MAX_LENGTH + 1, 5000]))
        ids = [draw(tame_id)] * length
    types = chaos.pick(
        st.sampled_from([[], [0] * len(ids)]),
        st.lists(st.sampled_from([-1, 0, 1, 2, *INT64]), max_size=len(ids) + 2),
    )
    return W["TokenIds"](input_ids=ids, token_type_ids=types)


@st.composite
def text_item(draw, message: str, allow_ids: bool, chaos: Chaos):
    """A TextInput or ModelInput twin: text, pair, ids or (wild) no kind at all."""
    kinds = ["text", "text", "pair"] + (["ids"] if allow_ids else [])
    kind = chaos.pick(st.sampled_from(kinds), st.sampled_from([*kinds, "none"]))
    cls = W[message]
    if kind == "text":
        return cls(text=chaos.pick(tame_text, wild_text))
    if kind == "pair":
        first, second = chaos.pick(tame_text, wild_text), chaos.pick(tame_text, wild_text)
        return cls(pair=W["TextPair"](text=first, text_pair=second))
    if kind == "ids":
        return cls(ids=draw(token_ids(chaos)))
    return cls()


tame_enum = st.integers(0, 3)
wild_enum = st.integers(0, 5) | st.sampled_from([-1, 99, *INT32]) | st.integers(*INT32)
tame_max_length = st.just(0) | st.sampled_from([4, 8, MAX_LENGTH]) | st.integers(1, MAX_LENGTH)
wild_max_length = st.sampled_from([1, 2, 3, MAX_LENGTH + 1, 2**31, UINT32_MAX]) | st.integers(
    0, UINT32_MAX
)


def tokenize_options(draw, chaos: Chaos):
    """TokenizeOptions twin, or None for unset."""
    if draw(st.booleans()):
        return None
    options = W["TokenizeOptions"](max_length=chaos.pick(tame_max_length, wild_max_length))
    truncation = draw(st.none() | st.booleans())
    if truncation is not None:
        options.truncation = truncation
    return options


@st.composite
def unknown_fields(draw) -> bytes:
    """Wire-valid fields with numbers no pipeserve message uses (proto3 must skip them)."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        number = draw(st.integers(1000, 2**29 - 1))
        if draw(st.booleans()):
            out += _varint(number << 3) + _varint(draw(st.integers(0, 2**64 - 1)))
        else:
            payload = draw(st.binary(max_size=16))
            out += _varint(number << 3 | 2) + _varint(len(payload)) + payload
    return Wire(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def request_bytes(
    draw, message: str, item: str, allow_ids: bool, fill: Callable[[Any, Chaos], None]
) -> Wire:
    """A request twin with random items, serialized; `fill` sets the RPC's other fields.

    The item list is short (1 to LIMITED_ITEMS items when tame, 0 to LIMITED_ITEMS + 2 when
    wild), or huge: one item repeated up to millions of times, built by concatenating its
    serialization (repeated fields append when serialized messages are concatenated), so it
    costs nothing."""
    chaos = Chaos(draw, draw(chaos_level))
    rest = W[message]()
    fill(rest, chaos)
    options = tokenize_options(draw, chaos)
    if options is not None:
        rest.options.CopyFrom(options)
    tail = rest.SerializeToString() + (draw(unknown_fields()) if chaos.wild() else b"")
    if chaos.wild() and draw(st.integers(0, 3)) == 0:
        one = W[message](inputs=[draw(text_item(item, allow_ids, chaos))]).SerializeToString()
        count = draw(st.sampled_from([LIMITED_ITEMS + 1, 1000, 100_000, 3_000_000]))
        # At most twice the server's message limit: over it, yet cheap to build and send.
        count = min(count, max(LIMITED_ITEMS + 1, 2 * LIMITED_MESSAGE_BYTES // len(one)))
        return Wire(one * count + tail)
    sizes = chaos.pick(st.integers(1, LIMITED_ITEMS), st.integers(0, LIMITED_ITEMS + 2))
    items = [draw(text_item(item, allow_ids, chaos)) for _ in range(sizes)]
    return Wire(W[message](inputs=items).SerializeToString() + tail)


def _fill_tokenize(request, chaos: Chaos) -> None:
    request.padding = chaos.pick(tame_enum, wild_enum)
    for name in ("return_attention_mask", "return_token_type_ids"):
        value = chaos.draw(st.none() | st.booleans())
        if value is not None:
            setattr(request, name, value)
    request.return_tokens = chaos.draw(st.booleans())
    request.return_offsets = chaos.draw(st.booleans())


OUTPUTS = ["logits", "last_hidden_state"]  # what the tiny classifier has (checked)
OTHER_OUTPUTS = ["hidden_states", "pooler_output", "attentions", "start_logits", "", "LOGITS"]


def _fill_forward(request, chaos: Chaos) -> None:
    tame = st.lists(st.sampled_from(OUTPUTS), max_size=3)
    wild = st.one_of(
        st.lists(st.sampled_from(OUTPUTS + OTHER_OUTPUTS) | st.text(max_size=12), max_size=4),
        st.lists(st.sampled_from(OUTPUTS), min_size=20, max_size=40),
    )
    request.outputs.extend(name.encode() for name in chaos.pick(tame, wild))
    if chaos.wild() and chaos.wild():
        request.outputs.append(chaos.pick(bad_utf8_text(), surrogate_text()))
    request.output_dtype = chaos.pick(st.integers(0, 2), wild_enum)


def _fill_classify(request, chaos: Chaos) -> None:
    request.function_to_apply = chaos.pick(tame_enum, wild_enum)
    request.top_k = chaos.pick(
        st.integers(0, 3) | st.sampled_from([100, INT32[1]]),
        st.sampled_from([INT32[1], UINT32_MAX]) | st.integers(0, UINT32_MAX),
    )
    # Each alone is fine; with top_k, all_labels would leave it ignored.
    request.all_labels = chaos.draw(st.booleans()) and (not request.top_k or chaos.wild())
    # No stride here: any window_aggregation would be ignored.
    request.window_aggregation = chaos.pick(st.just(0), wild_enum)


tokenize_requests = request_bytes("TokenizeRequest", "TextInput", False, _fill_tokenize)
forward_requests = request_bytes("ForwardRequest", "ModelInput", True, _fill_forward)
classify_requests = request_bytes("ClassifyRequest", "ModelInput", True, _fill_classify)


@st.composite
def classify_stream_messages(draw) -> list[Wire]:
    """ClassifyStreamRequest bytes; ids are unique (index prefix) but otherwise random."""
    messages = []
    for index in range(draw(st.integers(0, 6))):
        suffix = draw(st.just(b"") | unicode_text.map(str.encode))
        if draw(st.integers(0, 9)) == 0:
            suffix = draw(wild_text)
        head = W["ClassifyStreamRequest"](id=f"{index}:".encode() + suffix).SerializeToString()
        body = draw(classify_requests) if draw(st.integers(0, 5)) else b""
        # Field 2 (request), length-delimited: the ClassifyRequest bytes drawn above.
        messages.append(Wire(head + _varint(2 << 3 | 2) + _varint(len(body)) + body))
    return messages


@st.composite
def mutated(draw) -> tuple[str, Wire]:
    """A method and bytes: a valid request with bytes flipped, cut, inserted; or random."""
    method, strategy = draw(
        st.sampled_from(
            [
                ("Tokenize", tokenize_requests),
                ("Forward", forward_requests),
                ("Classify", classify_requests),
                ("ModelInfo", st.just(b"")),
            ]
        )
    )
    if draw(st.integers(0, 4)) == 0:
        return method, Wire(draw(st.binary(max_size=64)))
    data = bytearray(draw(strategy)[:4096])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at]
    return method, Wire(data)


# --- The oracle: what a request must get -----------------------------------------------------

REQUEST_TYPES = {
    "Tokenize": (pb.TokenizeRequest, pb.TokenizeResponse),
    "Forward": (pb.ForwardRequest, pb.ForwardResponse),
    "Classify": (pb.ClassifyRequest, pb.ClassifyResponse),
    "ModelInfo": (pb.ModelInfoRequest, pb.ModelInfoResponse),
}


def parse(message_type: type, data: bytes) -> Any | None:
    """The real generated message, or None when protobuf refuses the bytes (as the server)."""
    try:
        return message_type.FromString(data)
    except DecodeError:
        return None


def _text_faults(value: str, where: str) -> list[str]:
    if not value:
        return [f"{where} is empty"]
    if len(value) > LIMITED_CHARS:
        return [f"{where} has {len(value)} chars"]
    return []


def item_faults(index: int, item) -> list[str]:
    kind = item.WhichOneof("kind")
    where = f"inputs[{index}]"
    if kind is None:
        return [f"{where} has no kind"]
    if kind == "text":
        return _text_faults(item.text, where + ".text")
    if kind == "pair":
        return _text_faults(item.pair.text, where + ".text") + _text_faults(
            item.pair.text_pair, where + ".text_pair"
        )
    ids, types = list(item.ids.input_ids), list(item.ids.token_type_ids)
    faults = []
    if not ids or len(ids) > MAX_LENGTH:
        faults.append(f"{where} has {len(ids)} ids")
    if any(not 0 <= i < VOCAB for i in ids):
        faults.append(f"{where} has an id outside the vocabulary")
    if types and (len(types) != len(ids) or any(not 0 <= t <= 1 for t in types)):
        faults.append(f"{where} has bad token_type_ids")
    return faults


def request_faults(method: str, request, outputs: frozenset[str]) -> list[str]:
    """Documented rules `request` breaks; any one means it must not be answered OK."""
    if method == "ModelInfo":
        return []
    faults = []
    count = len(request.inputs)
    if count == 0:
        faults.append("no inputs")
    elif count > LIMITED_ITEMS:
        faults.append(f"{count} items")
    else:
        for index, item in enumerate(request.inputs):
            faults += item_faults(index, item)
    options = request.options
    if method == "Tokenize" and request.padding not in range(4):
        faults.append(f"padding {request.padding}")
    if options.max_length > MAX_LENGTH:
        faults.append(f"max_length {options.max_length}")
    texts = [item for item in request.inputs if item.WhichOneof("kind") in ("text", "pair")]
    special = 3 if any(item.WhichOneof("kind") == "pair" for item in texts) else 2
    if texts and 0 < options.max_length <= special:
        faults.append(f"max_length {options.max_length} leaves no room beside special tokens")
    if method == "Forward":
        if request.output_dtype not in range(3):
            faults.append(f"output_dtype {request.output_dtype}")
        faults += [f"output {name!r}" for name in request.outputs if name not in outputs]
        if len(set(request.outputs)) < len(request.outputs):
            faults.append("an output asked for twice")
    if method == "Classify":
        if request.function_to_apply not in range(4):
            faults.append(f"function_to_apply {request.function_to_apply}")
        if request.all_labels and request.top_k:
            faults.append(f"top_k {request.top_k} with all_labels")
        if request.window_aggregation:
            faults.append(f"window_aggregation {request.window_aggregation} without stride")
    return faults


def token_faults(tokenizer, request) -> list[str]:
    """Rules that only tokenizing can tell, decided by the same tokenizer in-process: an
    untruncated text longer than the model, or more tokens in all than LIMITED_TOKENS."""
    options = request.options
    truncation = options.truncation if options.HasField("truncation") else True
    max_length = options.max_length or MAX_LENGTH
    faults, total = [], 0
    for index, item in enumerate(request.inputs):
        kind = item.WhichOneof("kind")
        if kind == "ids":
            total += len(item.ids.input_ids)
            continue
        texts = (item.text,) if kind == "text" else (item.pair.text, item.pair.text_pair)
        count = len(tokenizer(*texts, truncation=truncation, max_length=max_length).input_ids)
        if count > MAX_LENGTH:
            faults.append(f"inputs[{index}] has {count} tokens untruncated")
        total += count
    if total > LIMITED_TOKENS:
        faults.append(f"{total} tokens in all")
    return faults


def _real_lengths(encoding) -> int:
    return sum(encoding.attention_mask) if encoding.attention_mask else len(encoding.input_ids)


def check_tokenize(request: pb.TokenizeRequest, response: pb.TokenizeResponse) -> None:
    assert len(response.encodings) == len(request.inputs)
    lengths = {len(e.input_ids) for e in response.encodings}
    options = request.options
    padding = request.padding or pb.PADDING_LONGEST
    if padding != pb.PADDING_DO_NOT_PAD:
        assert len(lengths) == 1, f"padding {padding} left rows of lengths {lengths}"
    if padding == pb.PADDING_MAX_LENGTH:
        assert min(lengths) >= (options.max_length or MAX_LENGTH)
    mask = request.return_attention_mask if request.HasField("return_attention_mask") else True
    for e in response.encodings:
        n = len(e.input_ids)
        assert all(0 <= i < VOCAB for i in e.input_ids)
        assert len(e.attention_mask) == (n if mask else 0)
        assert set(e.attention_mask) <= {0, 1}
        if request.HasField("return_token_type_ids"):
            assert len(e.token_type_ids) == (n if request.return_token_type_ids else 0)
        else:
            assert len(e.token_type_ids) in (0, n)
        assert len(e.tokens) == (n if request.return_tokens else 0)
        assert len(e.offsets) == (n if request.return_offsets else 0)
        assert all(o.start <= o.end for o in e.offsets)
        real = _real_lengths(e)
        assert 1 <= real <= MAX_LENGTH
        truncation = options.truncation if options.HasField("truncation") else True
        if truncation and options.max_length and mask:
            assert real <= options.max_length, f"{real} tokens, max_length {options.max_length}"


DTYPE_SIZES = {pb.DTYPE_FLOAT32: 4, pb.DTYPE_FLOAT16: 2, pb.DTYPE_INT64: 8, pb.DTYPE_INT32: 4}


def check_forward(request: pb.ForwardRequest, response: pb.ForwardResponse) -> None:
    count = len(request.inputs)
    asked = list(request.outputs) or ["logits"]
    names = [o.name for o in response.outputs]
    assert names == asked
    assert len(response.sequence_lengths) == count
    assert all(1 <= n <= MAX_LENGTH for n in response.sequence_lengths)
    want = pb.DTYPE_FLOAT16 if request.output_dtype == pb.DTYPE_FLOAT16 else pb.DTYPE_FLOAT32
    for output in response.outputs:
        tensor = output.tensor
        assert tensor.dtype == want
        shape = list(tensor.shape)
        assert shape and shape[0] == count and all(d > 0 for d in shape)
        assert len(tensor.data) == DTYPE_SIZES[tensor.dtype] * math.prod(shape), output.name
        if len(shape) == 3:  # per-token: padded to the longest item
            assert shape[1] == max(response.sequence_lengths), output.name
        values = np.frombuffer(tensor.data, "<f2" if want == pb.DTYPE_FLOAT16 else "<f4")
        assert np.isfinite(values).all(), output.name


def check_classify(request: pb.ClassifyRequest, response: pb.ClassifyResponse) -> None:
    assert len(response.results) == len(request.inputs)
    top_k = request.top_k
    want = len(LABELS) if request.all_labels else min(top_k or 1, len(LABELS))
    bounded = request.function_to_apply != pb.FUNCTION_TO_APPLY_NONE
    for result in response.results:
        labels = list(result.labels)
        assert len(labels) == want
        assert len({s.index for s in labels}) == want
        for score in labels:
            assert 0 <= score.index < len(LABELS) and score.label == LABELS[score.index]
            assert math.isfinite(score.score)
            if bounded:
                assert 0.0 <= score.score <= 1.0 + 1e-6
        scores = [s.score for s in labels]
        assert scores == sorted(scores, reverse=True)


def check_model_info(_request, response: pb.ModelInfoResponse) -> None:
    assert response.model and response.task_type == pb.TASK_TEXT_CLASSIFICATION
    assert list(response.labels) == LABELS
    assert response.max_length == MAX_LENGTH and response.vocab_size == VOCAB
    assert response.max_items_per_request == LIMITED_ITEMS
    assert response.max_tokens_per_request == LIMITED_TOKENS
    assert "logits" in response.outputs
    assert len(response.workers) == 2


CHECKS = {
    "Tokenize": check_tokenize,
    "Forward": check_forward,
    "Classify": check_classify,
    "ModelInfo": check_model_info,
}


# --- The server and the sending -------------------------------------------------------------


@dataclass(repr=False)
class Fuzzer:
    server: ServerProcess
    channel: grpc.Channel
    stub: InferenceStub
    tokenizer: Any = None
    outputs: frozenset[str] = frozenset()
    baseline: list[list[tuple[str, float]]] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    calls: int = 0  # RPCs
    sent: int = 0  # request messages (a stream call sends several)

    def __repr__(self) -> str:
        return f"Fuzzer({self.server.address})"

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))

    def raw_unary(self, method: str) -> Callable:
        return self.channel.unary_unary(
            SERVICE + method, response_deserializer=REQUEST_TYPES[method][1].FromString
        )

    def record(self, method: str, code: grpc.StatusCode, messages: int = 1) -> None:
        self.calls += 1
        self.sent += messages
        self.outcomes[method, code.name] += 1

    def known_good(self) -> list[list[tuple[str, float]]]:
        request = pb.ClassifyRequest(inputs=[pb.ModelInput(text=t) for t in SEED_SENTENCES])
        request.all_labels = True
        response = self.stub.Classify(request, timeout=CALL_TIMEOUT)
        return [[(s.label, s.score) for s in r.labels] for r in response.results]

    def faults(self, method: str, request) -> list[str]:
        """Every rule `request` breaks: any one means it must be refused, none that it must
        be answered OK."""
        faults = request_faults(method, request, self.outputs)
        if faults or method == "ModelInfo":
            return faults
        return token_faults(self.tokenizer, request)

    def assert_survived(self) -> None:
        """The process is alive and answers as before the fuzzing."""
        assert self.server.proc.poll() is None, "\n".join(self.server.log[-30:])
        assert_classified_alike(self.known_good(), self.baseline)
        unexpected = [line for line in self.server.log if "unexpected error" in line]
        print(
            f"\nfuzz so far: {self.calls} calls, {self.sent} request messages "
            f"(PIPESERVE_FUZZ_EXAMPLES={EXAMPLES}); outcomes (stream items: one per response):"
        )
        for (method, code), count in sorted(self.outcomes.items()):
            print(f"  {method:26} {code:20} {count}")
        assert not unexpected, unexpected


@pytest.fixture(scope="module")
def fuzzer(limited_server: ServerProcess, tiny_distilbert: Path) -> Iterator[Fuzzer]:
    # The client takes any response size, so that only the server's limits are tested.
    channel = grpc.insecure_channel(
        limited_server.address, options=[("grpc.max_receive_message_length", -1)]
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
        fuzz = Fuzzer(limited_server, channel, InferenceStub(channel), tokenizer)
        info = fuzz.stub.ModelInfo(pb.ModelInfoRequest(), timeout=CALL_TIMEOUT)
        check_model_info(None, info)
        fuzz.outputs = frozenset(info.outputs)
        assert fuzz.outputs >= set(OUTPUTS)
        fuzz.baseline = fuzz.known_good()
        yield fuzz
    finally:
        channel.close()


def _huge(data: bytes, request) -> bool:
    return len(data) > HUGE_BYTES or (request is not None and len(request.inputs) > HUGE_ITEMS)


def fuzz_unary(fuzz: Fuzzer, method: str, data: bytes, *, raw: bool = False) -> None:
    """Sends `data` as one `method` call and checks how it ends.

    Decodable bytes go as the parsed generated message through the stub (unless `raw`);
    undecodable ones as the bytes themselves."""
    request_type, _ = REQUEST_TYPES[method]
    request = parse(request_type, data)
    try:
        if request is not None and not raw:
            response = getattr(fuzz.stub, method)(request, timeout=CALL_TIMEOUT)
        else:
            response = fuzz.raw_unary(method)(bytes(data), timeout=CALL_TIMEOUT)
        code, details = OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
    fuzz.record(f"{method} (mutated)" if raw else method, code)
    context = f"{method} ({len(data)} bytes) -> {code.name}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and _huge(data, request):
        return
    assert code in ALLOWED, context
    if request is None:
        assert code == INVALID or (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(data) > LIMITED_MESSAGE_BYTES
        ), context
        return
    faults = fuzz.faults(method, request)
    if code == OK:
        assert not faults, f"{context}; accepted although: {faults}"
        CHECKS[method](request, response)
    else:
        assert faults, f"{context}; refused although it breaks no rule"


def _settings(share: str) -> settings:
    return settings(
        max_examples=max(1, round(EXAMPLES * SHARES[share])),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


# --- The tests -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def survives(fuzzer: Fuzzer) -> Iterator[None]:
    """After each test, whatever ran before it: the server lives and answers as before."""
    yield
    fuzzer.assert_survived()


@_settings("tokenize")
@given(data=tokenize_requests)
def test_fuzz_tokenize(fuzzer: Fuzzer, data: bytes) -> None:
    fuzz_unary(fuzzer, "Tokenize", data)


@_settings("forward")
@given(data=forward_requests)
def test_fuzz_forward(fuzzer: Fuzzer, data: bytes) -> None:
    fuzz_unary(fuzzer, "Forward", data)


@_settings("classify")
@given(data=classify_requests)
def test_fuzz_classify(fuzzer: Fuzzer, data: bytes) -> None:
    fuzz_unary(fuzzer, "Classify", data)


@_settings("model_info")
@given(data=unknown_fields())
def test_fuzz_model_info(fuzzer: Fuzzer, data: bytes) -> None:
    fuzz_unary(fuzzer, "ModelInfo", data)


@_settings("mutated")
@given(case=mutated())
def test_fuzz_mutated_bytes(fuzzer: Fuzzer, case: tuple[str, bytes]) -> None:
    method, data = case
    fuzz_unary(fuzzer, method, data, raw=True)


@_settings("stream")
@given(messages=classify_stream_messages())
def test_fuzz_classify_stream(fuzzer: Fuzzer, messages: list[bytes]) -> None:
    requests = [parse(pb.ClassifyStreamRequest, m) for m in messages]
    decodable = all(r is not None for r in requests)
    try:
        if decodable:
            call = fuzzer.stub.ClassifyStream(iter(requests), timeout=CALL_TIMEOUT)
        else:
            call = fuzzer.channel.stream_stream(
                SERVICE + "ClassifyStream",
                response_deserializer=pb.ClassifyStreamResponse.FromString,
            )(iter([bytes(m) for m in messages]), timeout=CALL_TIMEOUT)
        responses: list[pb.ClassifyStreamResponse] = []
        responses.extend(call)
        code, details = OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
    fuzzer.record("ClassifyStream", code, max(1, len(messages)))
    context = f"ClassifyStream ({len(messages)} messages) -> {code.name}: {details}"
    # The stream fails at the first message the server cannot take: an undecodable one
    # (INVALID_ARGUMENT from the handler) or one over the size limit (RESOURCE_EXHAUSTED from
    # gRPC, which can overtake an earlier undecodable one that the handler has not read yet).
    ending = {
        grpc.StatusCode.RESOURCE_EXHAUSTED if len(m) > LIMITED_MESSAGE_BYTES else INVALID
        for m, r in zip(messages, requests, strict=True)
        if r is None or len(m) > LIMITED_MESSAGE_BYTES
    }
    if ending:
        assert code in ending, context
        return
    assert code == OK, context
    by_id = {r.id: r.request for r in requests}
    assert sorted(r.id for r in responses) == sorted(by_id), context
    for response in responses:
        request = by_id[response.id]
        faults = fuzzer.faults("Classify", request)
        outcome = response.WhichOneof("outcome")
        fuzzer.outcomes["ClassifyStream item", outcome or "neither"] += 1
        if outcome == "status":
            assert response.status.code in ALLOWED_STREAM_ERRORS, response.status
            assert faults, f"stream item {response.id!r} refused although it breaks no rule"
        else:
            assert outcome == "response", response
            assert not faults, f"stream item {response.id!r} accepted although: {faults}"
            check_classify(request, response.response)
