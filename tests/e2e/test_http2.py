"""Abuse at the HTTP/2 level, over plain sockets to a real server: garbage instead of the
connection preface, invalid HPACK, truncated gRPC messages, invalid UTF-8 in a string field,
connections cut mid-frame. After each, the server process must still be alive and answer a
normal Classify with the scores it gave before.

Valid HTTP/2 is spoken with the `h2` state machine; invalid frames are written by hand.
Nothing sleeps: every wait is a socket read with a timeout.
"""

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
import hpack
import pytest

from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import SEED_SENTENCES, assert_classified_alike
from tests.servers import ServerProcess, paused

READ_TIMEOUT = 10.0  # a read that waits this long means the server neither answered nor closed
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x7, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4
SERVICE = "/pipeserve.v1.Inference/"
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


# --- Wire helpers ------------------------------------------------------------------------------


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def grpc_message(message: bytes, declared: int | None = None) -> bytes:
    """gRPC length-prefixed framing: uncompressed flag, big-endian length, the message."""
    return b"\x00" + struct.pack(">I", len(message) if declared is None else declared) + message


def field_bytes(number: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (a string, bytes or message field), value < 128 bytes."""
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


class NoAnswer(AssertionError):
    """A stream that got no answer in time: apart from other failed checks, so that an xfail
    can name it alone."""


@dataclass
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes


class RawConnection:
    """One TCP connection to the server that reads whole HTTP/2 frames."""

    def __init__(self, address: str, timeout: float = READ_TIMEOUT) -> None:
        host, port = address.rsplit(":", 1)
        self.timeout = timeout
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._buffer = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                raise AssertionError(
                    f"the server neither answered nor closed the connection in {self.timeout} s"
                ) from None
            if not chunk:
                self.closed = True
                return False
            self._buffer += chunk
        return True

    def read_frame(self) -> Frame | None:
        """The next frame, or None once the server has closed the connection."""
        if not self._fill(9):
            return None
        length = int.from_bytes(self._buffer[:3], "big")
        if not self._fill(9 + length):
            return None
        head, self._buffer = self._buffer[: 9 + length], self._buffer[9 + length :]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return Frame(head[3], head[4], stream, head[9:])

    def close(self, reset: bool = False) -> None:
        if reset:  # RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class Outcome:
    """How one gRPC call over raw HTTP/2 ended."""

    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    reset: int | None = None  # RST_STREAM error code
    goaway: int | None = None  # GOAWAY error code
    closed: bool = False  # the server closed the connection

    @property
    def grpc_status(self) -> int | None:
        value = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        """The length-prefixed response messages in `data`."""
        out, rest = [], self.data
        while rest:
            assert rest[0] == 0, "compressed response message"
            length = int.from_bytes(rest[1:5], "big")
            out.append(rest[5 : 5 + length])
            rest = rest[5 + length :]
        return out


class H2Client:
    """Valid HTTP/2 via the `h2` state machine, one gRPC call per stream."""

    def __init__(self, address: str, timeout: float = READ_TIMEOUT) -> None:
        self.address = address
        self.raw = RawConnection(address, timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.raw.send(data)

    def start(self, method: str, *, timeout: str | None = None) -> int:
        """Opens a stream for `method` (headers only); returns its id."""
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + method),
            (":authority", self.address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        self.conn.send_headers(stream, headers)
        self.flush()
        return stream

    def send(self, stream: int, body: bytes, end_stream: bool = True) -> None:
        self.conn.send_data(stream, body, end_stream=end_stream)
        self.flush()

    def wait(self, stream: int) -> Outcome:
        """Reads until `stream` ends (or is reset, or the connection ends)."""
        outcome = Outcome()
        while True:
            try:
                chunk = self.raw.sock.recv(65536)
            except TimeoutError:
                raise NoAnswer(
                    f"stream {stream} got no answer in {self.raw.timeout} s: {outcome}"
                ) from None
            if not chunk:
                outcome.closed = True
                return outcome
            for event in self.conn.receive_data(chunk):
                if getattr(event, "stream_id", stream) != stream:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    outcome.headers = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    outcome.trailers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    outcome.data += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    outcome.reset = event.error_code
                    return outcome
                elif isinstance(event, h2.events.ConnectionTerminated):
                    outcome.goaway = event.error_code
                    return outcome
                elif isinstance(event, h2.events.StreamEnded):
                    self.flush()
                    return outcome
            self.flush()

    def call(self, method: str, body: bytes, *, timeout: str | None = None) -> Outcome:
        stream = self.start(method, timeout=timeout)
        self.send(stream, body)
        return self.wait(stream)

    def close(self) -> None:
        self.raw.close()


# --- The server and its health -----------------------------------------------------------------


@dataclass
class Target:
    server: ServerProcess
    stub: InferenceStub
    baseline: list[list[tuple[str, float]]]

    @property
    def address(self) -> str:
        return self.server.address

    def known_good(self) -> list[list[tuple[str, float]]]:
        request = pb.ClassifyRequest(inputs=[pb.ModelInput(text=t) for t in SEED_SENTENCES])
        request.all_labels = True
        response = self.stub.Classify(request, timeout=30)
        return [[(s.label, s.score) for s in r.labels] for r in response.results]

    def assert_healthy(self) -> None:
        """Alive, answering as before, and nothing unexpected in its log."""
        assert self.server.proc.poll() is None, "\n".join(self.server.log[-30:])
        assert_classified_alike(self.known_good(), self.baseline)
        unexpected = [line for line in self.server.log if "unexpected error" in line]
        assert not unexpected, unexpected


@pytest.fixture(scope="module")
def target(every_task: ServerProcess) -> Iterator[Target]:
    """The shared server of every task; calls naming no model reach its default, the tiny
    classifier, served by one worker."""
    channel = grpc.insecure_channel(every_task.address)
    try:
        stub = InferenceStub(channel)
        target = Target(every_task, stub, [])
        target.baseline = target.known_good()
        yield target
    finally:
        channel.close()


GOOD_TEXT = SEED_SENTENCES[0].encode()
# ClassifyRequest{inputs: [ModelInput{text: GOOD_TEXT}]}, hand-encoded.
GOOD_CLASSIFY = field_bytes(1, field_bytes(1, GOOD_TEXT))


def test_raw_http2_harness_speaks_grpc(target: Target) -> None:
    """A valid Classify over raw HTTP/2 answers OK with the scores the stub gets."""
    client = H2Client(target.address)
    try:
        outcome = client.call("Classify", grpc_message(GOOD_CLASSIFY))
    finally:
        client.close()
    assert outcome.grpc_status == 0, outcome
    (message,) = outcome.messages()
    response = pb.ClassifyResponse.FromString(message)
    assert len(response.results) == 1
    (label,) = response.results[0].labels
    best = target.baseline[0][0]
    assert label.label == best[0] and label.score == pytest.approx(best[1], abs=1e-5)


# --- Garbage instead of the connection preface -------------------------------------------------

GARBAGE = {
    "http1-request": b"POST /pipeserve.v1.Inference/Classify HTTP/1.1\r\nHost: x\r\n\r\n",
    "zeros": b"\x00" * 64,
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64,
    "preface-typo": PREFACE.replace(b"SM", b"MS") + frame(SETTINGS, 0, 0),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_instead_of_preface_closes_the_connection(target: Target, name: str) -> None:
    connection = RawConnection(target.address)
    try:
        connection.send(GARBAGE[name])
        frames = []
        while (received := connection.read_frame()) is not None:
            frames.append(received)
    finally:
        connection.close()
    assert connection.closed
    # The server may greet (SETTINGS, WINDOW_UPDATE) or say GOAWAY, but opens no stream.
    assert all(f.stream == 0 for f in frames), frames
    target.assert_healthy()


# --- Invalid HPACK ----------------------------------------------------------------------------

BAD_HPACK = {
    "index-zero": b"\x80",
    "index-beyond-tables": b"\xff\x49",  # 127 + 73 = 200 > 61 static entries, empty dynamic
    "integer-overflow": b"\xff" + b"\xff" * 9 + b"\x7f",
    "table-size-over-setting": b"\x3f\xe1\xff\xff\x0f",
    "literal-longer-than-block": b"\x00\x05ab",
    "bad-huffman": b"\x40\x81\xff\x00",
}


@pytest.mark.parametrize("name", list(BAD_HPACK))
def test_invalid_hpack_is_refused(target: Target, name: str) -> None:
    """Preface, SETTINGS, then HEADERS for stream 1 whose header block does not decode: the
    stream gets no answer but an error (grpc-status != 0, RST_STREAM, or the connection
    ends with GOAWAY or a close), and the server lives on."""
    connection = RawConnection(target.address)
    decoder = hpack.Decoder()
    refused = None
    try:
        connection.send(PREFACE + frame(SETTINGS, 0, 0))
        connection.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, BAD_HPACK[name]))
        while refused is None:
            received = connection.read_frame()
            if received is None:
                refused = "connection closed"
            elif received.kind == GOAWAY:
                refused = f"GOAWAY {received.payload.hex()}"
            elif received.kind == RST_STREAM and received.stream == 1:
                refused = f"RST_STREAM {received.payload.hex()}"
            elif received.kind == DATA and received.stream == 1:
                pytest.fail(f"the server answered stream 1 with data: {received}")
            elif received.kind == HEADERS and received.stream == 1:
                headers = dict(decoder.decode(received.payload, raw=False))
                status = headers.get("grpc-status")
                assert status not in (None, "0"), headers
                refused = f"grpc-status {status}: {headers.get('grpc-message')}"
    finally:
        connection.close()
    assert refused
    target.assert_healthy()


# --- Truncated gRPC messages -----------------------------------------------------------------

TRUNCATED = {
    # Length prefix 1000, then 10 bytes, then END_STREAM.
    "prefix-larger-than-data": grpc_message(b"\x0a\x08\x0a\x06abcdef", declared=1000),
    # Not even the 5-byte prefix.
    "partial-prefix": b"\x00\x00\x00",
    # END_STREAM without any message.
    "no-message": b"",
}


@pytest.mark.parametrize("method", ["Classify", "ClassifyStream"])
@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_message_is_not_answered_ok(target: Target, name: str, method: str) -> None:
    """A request body cut short, then END_STREAM. With a deadline the call must end (so the
    stream is not held forever): a unary call with INVALID_ARGUMENT, or at its deadline (see
    the xfail below), never OK and never INTERNAL (the README: undecodable bytes are
    INVALID_ARGUMENT); a stream as a valid, empty stream or with one of those two."""
    client = H2Client(target.address)
    try:
        outcome = client.call(method, TRUNCATED[name], timeout="2S")
    finally:
        client.close()
    status = outcome.grpc_status
    assert status is not None or outcome.reset is not None, outcome
    refused = tuple(c.value[0] for c in (grpc.StatusCode.INVALID_ARGUMENT, DEADLINE_EXCEEDED))
    if method == "Classify":
        assert status in refused, outcome
    else:  # a stream of zero complete messages is a valid, empty stream
        assert status in (0, *refused), outcome
        assert not outcome.messages(), outcome
    target.assert_healthy()


@pytest.mark.xfail(
    reason="grpcio aio server: a unary call half-closed with no complete message is never "
    "answered (grpc/_cython/_cygrpc/aio/server.pyx.pxi _handle_unary_unary_rpc returns "
    "without a status), so the stream stays open until the client's deadline or disconnect",
    raises=NoAnswer,  # only that: a failed health check below is a real failure
)
def test_truncated_unary_message_without_deadline_is_answered(target: Target) -> None:
    client = H2Client(target.address, timeout=3.0)
    try:
        outcome = client.call("Classify", TRUNCATED["prefix-larger-than-data"])
    finally:
        client.close()
        target.assert_healthy()
    assert outcome.grpc_status not in (None, 0), outcome


def test_the_server_itself_ends_a_call_at_its_deadline(target: Target) -> None:
    """grpc-timeout sent over raw HTTP/2, where no client library enforces it: with the worker
    paused, only the server can end the call, and it must, with DEADLINE_EXCEEDED."""
    (worker,) = target.stub.ModelInfo(pb.ModelInfoRequest(), timeout=30).workers
    client = H2Client(target.address)
    try:
        with paused(worker.pid):
            outcome = client.call("Classify", grpc_message(GOOD_CLASSIFY), timeout="500m")
    finally:
        client.close()
    assert outcome.grpc_status == DEADLINE_EXCEEDED.value[0], outcome
    assert not outcome.messages(), outcome
    target.assert_healthy()


# --- Invalid UTF-8 inside a proto string field ---------------------------------------------

BAD = b"ok \xff\xfe \xed\xa0\x80"  # 0xFF, 0xFE, and an encoded lone surrogate
INVALID_UTF8 = {
    "classify-text": ("Classify", field_bytes(1, field_bytes(1, BAD))),
    "tokenize-text-pair": (
        "Tokenize",
        field_bytes(1, field_bytes(2, field_bytes(1, b"fine") + field_bytes(2, BAD))),
    ),
    "forward-output-name": ("Forward", GOOD_CLASSIFY + field_bytes(2, BAD)),
    "stream-id": ("ClassifyStream", field_bytes(1, BAD) + field_bytes(2, GOOD_CLASSIFY)),
    "stream-request-text": (
        "ClassifyStream",
        field_bytes(1, b"a") + field_bytes(2, field_bytes(1, field_bytes(1, BAD))),
    ),
}


@pytest.mark.parametrize("name", list(INVALID_UTF8))
def test_invalid_utf8_in_string_field_is_invalid_argument(target: Target, name: str) -> None:
    """Valid HTTP/2 and gRPC framing around a message protobuf refuses: INVALID_ARGUMENT."""
    method, message = INVALID_UTF8[name]
    client = H2Client(target.address)
    try:
        outcome = client.call(method, grpc_message(message), timeout="30S")
    finally:
        client.close()
    assert outcome.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0], outcome
    assert not outcome.messages(), outcome
    target.assert_healthy()


# --- Connections cut mid-frame ----------------------------------------------------------------


def _cut(target: Target, where: str) -> RawConnection:
    """Opens a connection and stops sending at `where`; returns it, still open."""
    client = H2Client(target.address)
    if where == "mid-preface":
        raw = RawConnection(target.address)
        raw.send(PREFACE[:10])
        client.close()
        return raw
    if where == "mid-frame-header":
        client.raw.send(frame(SETTINGS, 0, 0)[:5])
        return client.raw
    stream = client.conn.get_next_available_stream_id()
    if where == "mid-headers":
        headers = frame(HEADERS, END_HEADERS, stream, _headers_payload(client))
        client.raw.send(headers[: len(headers) // 2])
        return client.raw
    client.start("Classify")
    body = grpc_message(GOOD_CLASSIFY)
    if where == "mid-data-frame":
        data = frame(DATA, END_STREAM, stream, body)
        client.raw.send(data[: len(data) - 7])
        return client.raw
    if where == "mid-message":  # a whole DATA frame, but only part of the gRPC message
        client.send(stream, body[:12], end_stream=False)
        return client.raw
    # "after-request": the whole call is sent; wait (by reading) until the server has taken
    # the message in (the WINDOW_UPDATE that gives its bytes back), then leave, normally
    # before the answer (an answer that comes first also ends the wait).
    client.send(stream, body)
    while True:
        received = client.raw.read_frame()
        assert received is not None, "the server closed the connection"
        if received.stream == stream and received.kind in (HEADERS, DATA):
            return client.raw
        if received.kind == WINDOW_UPDATE and received.payload == struct.pack(">I", len(body)):
            return client.raw


def _headers_payload(client: H2Client) -> bytes:
    encoder = hpack.Encoder()
    return encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + "Classify"),
            (":authority", client.address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


CUTS = [
    "mid-preface",
    "mid-frame-header",
    "mid-headers",
    "mid-data-frame",
    "mid-message",
    "after-request",
]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("where", CUTS)
def test_connection_cut_mid_frame(target: Target, where: str, reset: bool) -> None:
    connection = _cut(target, where)
    connection.close(reset=reset)
    target.assert_healthy()
