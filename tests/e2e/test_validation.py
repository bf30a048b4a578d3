"""Bad requests as a caller sends them: each one is refused with INVALID_ARGUMENT and a message
that names the offending item and the limit, never INTERNAL, and the server stays healthy.

Requests the client library would refuse on its own (no inputs, an input with no kind, unknown
enum numbers, options that would be ignored) go through the raw generated stub; the rest through
the client, with its splitting of calls over the limits off (split_concurrency=0), so that the
server sees them whole.
Limits that need other flags are checked on a second server, shared with the fuzzer, started
with small ones (conftest's limited_server).
"""

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pipeserve.client import Client, Encoding, LabelScore, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
from tests.helpers import SEED_SENTENCES
from tests.servers import LIMITED_CHARS, LIMITED_ITEMS, LIMITED_TOKENS, ServerProcess

TIMEOUT = 60.0
# Words ("word", one token each) of an item that, LIMITED_ITEMS times with [CLS] and [SEP], pass
# LIMITED_TOKENS; an item stays within LIMITED_CHARS and the model's 512 tokens.
OVER_TOKENS_WORDS = LIMITED_TOKENS // LIMITED_ITEMS
INVALID = grpc.StatusCode.INVALID_ARGUMENT
_WORKER_READY = re.compile(r"worker (\d+) ready: pid (\d+)")


@dataclass(frozen=True)
class Model:
    """What the served checkpoint allows, read from its files, not from the server."""

    vocab_size: int
    max_length: int


@dataclass
class Target:
    """One running server with a client, a raw stub, and its answer before any bad request."""

    server: ServerProcess
    client: Client
    stub: InferenceStub
    baseline: list[list[LabelScore]]


@pytest.fixture(scope="module")
def model(tiny_distilbert: Path) -> Model:
    config = json.loads((tiny_distilbert / "config.json").read_text())
    tokenizer = json.loads((tiny_distilbert / "tokenizer_config.json").read_text())
    max_length = min(config["max_position_embeddings"], tokenizer["model_max_length"])
    return Model(vocab_size=config["vocab_size"], max_length=max_length)


def _target(server: ServerProcess, stack: ExitStack) -> Target:
    client = stack.enter_context(Client(server.address, timeout=TIMEOUT, split_concurrency=0))
    channel = stack.enter_context(grpc.insecure_channel(server.address))
    baseline = client.classify(SEED_SENTENCES, top_k=None)
    return Target(server, client, InferenceStub(channel), baseline)


@pytest.fixture(scope="module")
def targets(server: ServerProcess, limited_server: ServerProcess) -> Iterator[dict[str, Target]]:
    """ "default": the session server (default limits); "limited": the small-limits one."""
    with ExitStack() as stack:
        yield {"default": _target(server, stack), "limited": _target(limited_server, stack)}


def outcome(send: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status a call ended with: OK when it was accepted."""
    try:
        send()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    except PipeserveError as error:
        return error.code, error.details
    return grpc.StatusCode.OK, "the server accepted the request"


# --- The bad requests -------------------------------------------------------------------------

Send = Callable[[Target, Model], object]


@dataclass(frozen=True)
class Case:
    name: str
    send: Send
    # Substrings the message must contain; {vocab}, {max} and {over} stand for the vocabulary
    # size, the model's longest input and one more than that.
    expect: tuple[str, ...]
    server: str = "default"


def raw(method: str, request: object) -> Send:
    return lambda t, m: getattr(t.stub, method)(request, timeout=TIMEOUT)


def text(value: str) -> pb.ModelInput:
    return pb.ModelInput(text=value)


GOOD = SEED_SENTENCES[0]
LONG_TEXT = "word " * 600  # about 600 tokens, 3000 characters: over 512 tokens, under 50,000 chars


CASES = [
    # No inputs at all: the client refuses an empty list, so these go raw.
    Case("tokenize-no-inputs", raw("Tokenize", pb.TokenizeRequest()), ("inputs", "empty")),
    Case("forward-no-inputs", raw("Forward", pb.ForwardRequest()), ("inputs", "empty")),
    Case("classify-no-inputs", raw("Classify", pb.ClassifyRequest()), ("inputs", "empty")),
    # Empty texts and pairs, named by index and field.
    Case("tokenize-empty-text", lambda t, m: t.client.tokenize([""]), ("inputs[0].text", "empty")),
    Case(
        "forward-empty-text",
        lambda t, m: t.client.forward([GOOD, ""]),
        ("inputs[1].text", "empty"),
    ),
    Case(
        "classify-empty-text",
        lambda t, m: t.client.classify([GOOD, GOOD, ""]),
        ("inputs[2].text", "empty"),
    ),
    Case(
        "tokenize-empty-text-pair",
        lambda t, m: t.client.tokenize([(GOOD, "")]),
        ("inputs[0].text_pair", "empty"),
    ),
    Case(
        "classify-empty-text-pair",
        lambda t, m: t.client.classify([GOOD, (GOOD, "")]),
        ("inputs[1].text_pair", "empty"),
    ),
    Case(
        "forward-empty-first-of-pair",
        lambda t, m: t.client.forward([("", GOOD)]),
        ("inputs[0].text", "empty"),
    ),
    # An input with no kind set: the client cannot build one.
    Case(
        "tokenize-no-kind",
        raw("Tokenize", pb.TokenizeRequest(inputs=[pb.TextInput()])),
        ("inputs[0]", "text"),
    ),
    Case(
        "forward-no-kind",
        raw("Forward", pb.ForwardRequest(inputs=[pb.ModelInput()])),
        ("inputs[0]", "text", "ids"),
    ),
    Case(
        "classify-no-kind",
        raw("Classify", pb.ClassifyRequest(inputs=[text(GOOD), pb.ModelInput()])),
        ("inputs[1]", "text", "ids"),
    ),
    # Enum numbers this server does not know (a newer client, or a bug).
    Case(
        "padding-99",
        raw(
            "Tokenize",
            pb.TokenizeRequest(inputs=[pb.TextInput(text=GOOD)], padding=99),
        ),
        ("padding", "99"),
    ),
    Case(
        "function-to-apply-99",
        raw("Classify", pb.ClassifyRequest(inputs=[text(GOOD)], function_to_apply=99)),
        ("function_to_apply", "99"),
    ),
    Case(
        "output-dtype-99",
        raw("Forward", pb.ForwardRequest(inputs=[text(GOOD)], output_dtype=99)),
        ("output_dtype", "99"),
    ),
    # An output the model does not have: the message lists the ones it has.
    Case(
        "unknown-output",
        lambda t, m: t.client.forward([GOOD], outputs=["logits", "no_such_output"]),
        ("'no_such_output'", "logits", "last_hidden_state"),
    ),
    # Token ids.
    Case(
        "negative-id",
        lambda t, m: t.client.forward([[101, -1, 102]]),
        ("inputs[0].ids", "-1", "{vocab}"),
    ),
    Case(
        "id-equal-to-vocab-size",
        lambda t, m: t.client.classify([GOOD, [101, m.vocab_size, 102]]),
        ("inputs[1].ids", "{vocab}"),
    ),
    Case(
        "id-far-above-vocab",
        lambda t, m: t.client.forward([[101, 2**40, 102]]),
        ("inputs[0].ids", str(2**40), "{vocab}"),
    ),
    Case("empty-ids", lambda t, m: t.client.forward([[]]), ("inputs[0].ids", "empty")),
    Case(
        "token-type-ids-length-mismatch",
        # No attention mask, so the client sends both lists as they are.
        lambda t, m: t.client.forward(
            [Encoding(input_ids=[101, 7592, 102], attention_mask=[], token_type_ids=[0, 0])]
        ),
        ("inputs[0].ids.token_type_ids", "2", "3"),
    ),
    Case(
        "ids-longer-than-model",
        lambda t, m: t.client.forward([[101] * (m.max_length + 1)]),
        ("inputs[0].ids", "{over}", "{max}"),
    ),
    # --max-items-per-request.
    Case(
        "classify-too-many-items",
        lambda t, m: t.client.classify([GOOD] * (LIMITED_ITEMS + 1)),
        (f"{LIMITED_ITEMS + 1} ", f"max_items_per_request={LIMITED_ITEMS}"),
        server="limited",
    ),
    Case(
        "tokenize-too-many-items",
        lambda t, m: t.client.tokenize(["a"] * (LIMITED_ITEMS + 1)),
        (f"{LIMITED_ITEMS + 1} ", f"max_items_per_request={LIMITED_ITEMS}"),
        server="limited",
    ),
    Case(
        "forward-too-many-items",
        lambda t, m: t.client.forward([[101, 102]] * (LIMITED_ITEMS + 1)),
        (f"{LIMITED_ITEMS + 1} ", f"max_items_per_request={LIMITED_ITEMS}"),
        server="limited",
    ),
    # --max-text-chars.
    Case(
        "classify-text-over-chars",
        lambda t, m: t.client.classify(["short", "x" * (LIMITED_CHARS + 1)]),
        ("inputs[1].text", str(LIMITED_CHARS + 1), f"max_text_chars={LIMITED_CHARS}"),
        server="limited",
    ),
    Case(
        "tokenize-text-pair-over-chars",
        lambda t, m: t.client.tokenize([("short", "y" * (LIMITED_CHARS + 1))]),
        ("inputs[0].text_pair", str(LIMITED_CHARS + 1), f"max_text_chars={LIMITED_CHARS}"),
        server="limited",
    ),
    Case(
        "forward-text-over-chars",
        lambda t, m: t.client.forward(["z" * (LIMITED_CHARS + 1)]),
        ("inputs[0].text", f"max_text_chars={LIMITED_CHARS}"),
        server="limited",
    ),
    # --max-tokens-per-request: as many items as allowed, each a little over its share.
    Case(
        "classify-too-many-tokens",
        lambda t, m: t.client.classify(["word " * OVER_TOKENS_WORDS] * LIMITED_ITEMS),
        ("tokens", f"max_tokens_per_request={LIMITED_TOKENS}"),
        server="limited",
    ),
    Case(
        "forward-too-many-tokens",
        lambda t, m: t.client.forward([[101] + [2773] * OVER_TOKENS_WORDS + [102]] * LIMITED_ITEMS),
        (
            f"{(OVER_TOKENS_WORDS + 2) * LIMITED_ITEMS} tokens",
            f"max_tokens_per_request={LIMITED_TOKENS}",
        ),
        server="limited",
    ),
    # max_length above the model's maximum.
    Case(
        "tokenize-max-length-above-model",
        lambda t, m: t.client.tokenize([GOOD], max_length=m.max_length + 1),
        ("max_length", "{over}", "{max}"),
    ),
    Case(
        "forward-max-length-above-model",
        lambda t, m: t.client.forward([GOOD], max_length=m.max_length + 1),
        ("max_length", "{over}", "{max}"),
    ),
    Case(
        "classify-max-length-above-model",
        lambda t, m: t.client.classify([GOOD], max_length=10**6),
        ("max_length", str(10**6), "{max}"),
    ),
    # Options one of which the server would have to ignore: the client sends either alone.
    Case(
        "top-k-with-all-labels",
        raw("Classify", pb.ClassifyRequest(inputs=[text(GOOD)], top_k=2, all_labels=True)),
        ("top_k", "all_labels", "not both"),
    ),
    Case(
        "window-aggregation-without-stride",
        raw(
            "Classify",
            pb.ClassifyRequest(inputs=[text(GOOD)], window_aggregation=pb.WINDOW_AGGREGATION_MAX),
        ),
        ("window_aggregation", "stride"),
    ),
    # Longer than the model accepts, with truncation off (the proto: refused, not cut).
    Case(
        "tokenize-too-long-without-truncation",
        lambda t, m: t.client.tokenize([GOOD, LONG_TEXT], truncation=False),
        ("inputs[1]", "{max}"),
    ),
    Case(
        "forward-too-long-without-truncation",
        lambda t, m: t.client.forward([GOOD, LONG_TEXT], truncation=False),
        ("inputs[1]", "{max}"),
    ),
    Case(
        "classify-too-long-without-truncation",
        lambda t, m: t.client.classify([LONG_TEXT], truncation=False),
        ("inputs[0]", "{max}"),
    ),
    # A limit that cannot hold [CLS] text [SEP] would silently not truncate at all.
    Case(
        "tokenize-max-length-below-special-tokens",
        lambda t, m: t.client.tokenize([GOOD], max_length=2),
        ("max_length 2", "special tokens"),
    ),
    Case(
        "classify-pair-max-length-below-special-tokens",
        lambda t, m: t.client.classify([(GOOD, GOOD)], max_length=3),
        ("max_length 3", "special tokens"),
    ),
    # The response lists outputs in the order asked: a repeated name is a caller's mistake.
    Case(
        "forward-output-asked-twice",
        lambda t, m: t.client.forward([GOOD], outputs=["logits", "logits"]),
        ("'logits'", "more than once"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_request_is_refused_with_a_message_naming_it(case: Case, targets, model):
    code, details = outcome(lambda: case.send(targets[case.server], model))
    assert code == INVALID, f"{code.name}: {details}"
    for part in case.expect:
        wanted = part.format(
            vocab=model.vocab_size, max=model.max_length, over=model.max_length + 1
        )
        assert wanted in details, f"{wanted!r} not in {details!r}"


def test_client_refuses_what_the_raw_cases_send(targets):
    """Why those cases go raw: the client stops them before any call."""
    client = targets["default"].client
    with pytest.raises(ValueError, match="empty"):
        client.classify([])
    with pytest.raises(ValueError, match="top_k"):
        client.classify([GOOD], top_k=-2)
    with pytest.raises(ValueError, match="window_aggregation needs a stride"):
        client.classify([GOOD], window_aggregation="max")
    with pytest.raises(ValueError, match="padding"):
        client.tokenize([GOOD], padding="sideways")
    with pytest.raises(ValueError, match="dtype"):
        client.forward([GOOD], dtype="int8")
    with pytest.raises(ValueError, match="function_to_apply"):
        client.classify([GOOD], function_to_apply="tanh")


@pytest.mark.parametrize("name", ["limited", "default"])
def test_a_megabyte_text_is_refused_by_its_characters_not_its_tokens(
    name, targets, record_property
):
    """The character limit, checked before tokenizing, answers: with truncation off, a
    tokenized megabyte would be refused for its tokens instead."""
    megabyte = "word " * 200_000
    client = targets[name].client
    start = time.perf_counter()
    code, details = outcome(lambda: client.classify([megabyte], truncation=False))
    elapsed = time.perf_counter() - start
    record_property("refuse_1mb_seconds", elapsed)
    print(f"{name} server refused a 1 MB text in {elapsed * 1000:.1f} ms")
    assert code == INVALID, f"{code.name}: {details}"
    assert "inputs[0].text" in details
    assert "1000000" in details
    assert "max_text_chars=" in details
    assert "tokens" not in details


def _stream_request(request_id: str, request: pb.ClassifyRequest) -> pb.ClassifyStreamRequest:
    return pb.ClassifyStreamRequest(id=request_id, request=request)


def test_stream_answers_a_bad_request_with_its_own_error_and_the_rest_normally(targets):
    target = targets["default"]
    requests = [
        _stream_request("good-1", pb.ClassifyRequest(inputs=[text(SEED_SENTENCES[0])])),
        _stream_request("empty-text", pb.ClassifyRequest(inputs=[text(GOOD), text("")])),
        _stream_request(
            "good-2", pb.ClassifyRequest(inputs=[text(SEED_SENTENCES[1])], all_labels=True)
        ),
        _stream_request(
            "bad-top-k", pb.ClassifyRequest(inputs=[text(GOOD)], top_k=5, all_labels=True)
        ),
    ]
    responses = list(target.stub.ClassifyStream(iter(requests), timeout=TIMEOUT))

    assert sorted(r.id for r in responses) == sorted(r.id for r in requests)
    by_id = {r.id: r for r in responses}
    for bad, named in (("empty-text", "inputs[1].text"), ("bad-top-k", "top_k 5")):
        # A google.rpc.Status, as unary calls carry their failures.
        assert by_id[bad].WhichOneof("outcome") == "status"
        assert by_id[bad].status.code == 3 == INVALID.value[0]
        assert named in by_id[bad].status.message

    unary = target.client.classify(SEED_SENTENCES, top_k=None)
    for request_id, row, count in (("good-1", 0, 1), ("good-2", 1, 2)):
        assert by_id[request_id].WhichOneof("outcome") == "response"
        (result,) = by_id[request_id].response.results
        assert [label.label for label in result.labels] == [s.label for s in unary[row]][:count]
        assert result.labels[0].score == pytest.approx(unary[row][0].score, abs=1e-3)


def _worker_pids(server: ServerProcess) -> dict[int, int]:
    """Worker id -> pid of its latest start, from the server's log (logged before ready)."""
    pids = {}
    for line in server.log:
        match = _WORKER_READY.search(line)
        if match:
            pids[int(match.group(1))] = int(match.group(2))
    return pids


@pytest.mark.parametrize("name", ["limited", "default"])
def test_no_bad_request_is_internal_and_the_server_stays_healthy(name, targets, model):
    target = targets[name]
    megabyte = "word " * 200_000
    sends: list[tuple[str, Callable[[], object]]] = [
        (case.name, lambda case=case: case.send(target, model)) for case in CASES
    ]
    sends.append(("1mb", lambda: target.client.classify([megabyte])))
    sends.append(
        (
            "stream",
            lambda: list(
                target.stub.ClassifyStream(
                    iter([_stream_request("x", pb.ClassifyRequest(inputs=[text("")]))]),
                    timeout=TIMEOUT,
                )
            ),
        )
    )
    for label, send in sends:
        code, details = outcome(send)
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
            f"{label}: {code.name}: {details}"
        )

    assert target.server.proc.poll() is None, "the server process exited"
    workers = _worker_pids(target.server)
    assert workers, "no worker ready line in the server log"
    for pid in workers.values():
        os.kill(pid, 0)  # raises ProcessLookupError when the worker is gone

    after = target.client.classify(SEED_SENTENCES, top_k=None)
    assert [[(s.label, s.index) for s in row] for row in after] == [
        [(s.label, s.index) for s in row] for row in target.baseline
    ]
    for row_after, row_before in zip(after, target.baseline, strict=True):
        assert [s.score for s in row_after] == pytest.approx(
            [s.score for s in row_before], abs=1e-6
        )
