"""A request costs what it weighs (issue 22): requests that are small on the wire but would
make the server spend far more (windows that barely move, thousands of candidate labels or
fill-mask targets, templates that format into megabytes, megabytes to tokenize, absurd
LoadModel asks, echoed input larger than gRPC's metadata) are refused before the work, while
a health watcher and a well-behaved caller keep being answered. Every refusal is
INVALID_ARGUMENT or RESOURCE_EXHAUSTED (NOT_FOUND for an unknown model) with a message under
1 KB that names the limit, never INTERNAL or UNKNOWN. Also: ModelInfo gives the limits, the
metrics endpoint answers metrics alone and to its tokens, requests near each limit are answered
or refused by it, a dead worker is respawned with more front ends than pool threads, and a
stream is served after the default model is unloaded.

Timings are not asserted: the watcher's calls carry generous deadlines, and must all succeed.
The bearer scheme's reading, in process: tests/unit/test_costs.py."""

import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.servers import launch_server, wait_until, workers

pytestmark = pytest.mark.slow  # a server of its own with the limits these tests reach

ADMIN_TOKEN = "costs-admin-token"
METRICS_TOKEN = "costs-metrics-token"
MAX_TOKENS = 8192
MAX_LABELS = 8
MAX_TARGETS = 16
MAX_TEMPLATE = 64
MAX_CHARS = 50_000
REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
# The watcher's deadlines: far longer than any answer takes, short of a stalled server.
HEALTH_DEADLINE_S = 20
PROBE_DEADLINE_S = 60


@pytest.fixture(scope="module")
def served(tiny_distilbert, tiny_bert_mlm, task_models, tmp_path_factory):
    """cls (the default), mlm and nli, with the limits of this module, Admin and metrics."""
    folder = tmp_path_factory.mktemp("costs")
    (folder / "admin").write_text(ADMIN_TOKEN + "\n")
    (folder / "metrics").write_text(METRICS_TOKEN + "\n")
    server = launch_server(
        None,
        *("--model", f"cls={tiny_distilbert}", "--model", f"mlm={tiny_bert_mlm}"),
        *("--model", f"nli={task_models['nli']}"),
        *("--admin-token-file", str(folder / "admin")),
        *("--metrics-port", "0", "--metrics-token-file", str(folder / "metrics")),
        *("--max-tokens-per-request", str(MAX_TOKENS)),
        *("--max-candidate-labels", str(MAX_LABELS), "--max-targets", str(MAX_TARGETS)),
        *("--max-template-chars", str(MAX_TEMPLATE)),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(served) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 1 << 28)]
    with grpc.insecure_channel(served.address, options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.InferenceStub:
    return pb_grpc.InferenceStub(channel)


@pytest.fixture(scope="module")
def admin(channel) -> Callable:
    """Calls an Admin RPC by name with the admin token."""
    stub = pb_grpc.AdminStub(channel)
    metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    return lambda rpc, request: getattr(stub, rpc)(request, metadata=metadata, timeout=120)


@contextmanager
def watched(address: str, probe_text: str = "A gripping, funny film.") -> Iterator[list[str]]:
    """Health checks and a one-text Classify (of the nli model) called over and over, on a
    channel of their own, while the block runs; yields the list of their failures."""
    failures: list[str] = []
    stop = threading.Event()
    counts = {"health": 0, "probe": 0}

    def loop(kind: str) -> None:
        with grpc.insecure_channel(address) as own:
            health = health_pb2_grpc.HealthStub(own)
            inference = pb_grpc.InferenceStub(own)
            request = pb.ClassifyRequest(inputs=[pb.ModelInput(text=probe_text)], model="nli")
            while not stop.is_set() or counts[kind] == 0:
                try:
                    if kind == "health":
                        check = health.Check(
                            health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_DEADLINE_S
                        )
                        assert check.status == health_pb2.HealthCheckResponse.SERVING
                    else:
                        inference.Classify(request, timeout=PROBE_DEADLINE_S)
                except (grpc.RpcError, AssertionError) as error:
                    failures.append(f"{kind}: {error}")
                counts[kind] += 1
                stop.wait(0.05)

    threads = [threading.Thread(target=loop, args=(kind,)) for kind in counts]
    for thread in threads:
        thread.start()
    try:
        yield failures
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def assert_refused(error: grpc.RpcError, *names: str, codes=REFUSED) -> None:
    """A refusal with the right code and a short message naming each of `names`."""
    assert error.code() in codes, (error.code(), error.details()[:300])
    details = error.details()
    assert len(details.encode()) < 1024, len(details.encode())
    for name in names:
        assert name in details, (name, details)


def text_of(chars: int) -> str:
    return ("word " * (chars // 5 + 1))[:chars]


def inputs(*texts: str) -> list[pb.ModelInput]:
    return [pb.ModelInput(text=t) for t in texts]


# The cases of the issue, replayed with a health watcher.


def test_windows_that_barely_move_are_counted_before_they_are_made(served, stub):
    text = text_of(MAX_CHARS)
    with watched(served.address) as failures:
        for texts in ([text], [text] * 4, [text] * 16):
            request = pb.ClassifyRequest(inputs=inputs(*texts), stride=509, model="cls")
            error = refusal(lambda r=request: stub.Classify(r, timeout=120))
            assert_refused(error, f"max_tokens_per_request={MAX_TOKENS}", "stride 509")
    assert failures == []


def test_a_stride_within_the_limits_still_classifies_the_windows(stub):
    text = text_of(5000)
    request = pb.ClassifyRequest(inputs=inputs(text), stride=64, model="cls")
    [result] = stub.Classify(request, timeout=120).results
    assert result.windows > 1


@pytest.mark.parametrize(
    ("rpc", "request_of", "named"),
    [
        (
            "ClassifyZeroShot",
            lambda many: pb.ClassifyZeroShotRequest(
                inputs=["a"], candidate_labels=[f"label {i}" for i in range(many)], model="nli"
            ),
            f"max_candidate_labels={MAX_LABELS}",
        ),
        (
            "FillMask",
            lambda many: pb.FillMaskRequest(
                inputs=["a [MASK]."], targets=[f"t{i}" for i in range(many)], model="mlm"
            ),
            f"max_targets={MAX_TARGETS}",
        ),
    ],
    ids=["candidate-labels", "targets"],
)
@pytest.mark.parametrize("many", [20_000, 400_000])
def test_thousands_of_labels_or_targets_are_refused_by_their_count(
    served, stub, rpc, request_of, named, many
):
    request = request_of(many)
    with watched(served.address) as failures:
        error = refusal(lambda: getattr(stub, rpc)(request, timeout=120))
    assert_refused(error, str(many), named)
    assert failures == []


@pytest.mark.parametrize(
    ("template", "labels", "named"),
    [
        ("{:>100000000}", ["x", "y"], "1000"),
        ("{:>9223372036854775807}", ["x"], "1000"),
        ("{}" * 500_000, ["x", "y"], f"max_template_chars={MAX_TEMPLATE}"),
        ("{}" * 30, ["x" * 2000], f"max_text_chars={MAX_CHARS}"),
        ("{!r}" * 10, ["\x00" * 600], f"max_text_chars={MAX_CHARS}"),
    ],
    ids=["width", "huge-width", "long-template", "many-fields", "repr-fields"],
)
def test_templates_that_would_format_into_megabytes_are_refused(
    served, stub, template, labels, named
):
    with watched(served.address) as failures:
        request = pb.ClassifyZeroShotRequest(
            inputs=["a"], candidate_labels=labels, hypothesis_template=template, model="nli"
        )
        error = refusal(lambda: stub.ClassifyZeroShot(request, timeout=120))
    assert_refused(error, named)
    assert failures == []


def test_megabytes_to_tokenize_wait_their_turn_and_stop_at_the_limit(served, channel):
    """Three Tokenize calls of 256 texts of 50,000 characters (12.8 MB each) at once: each
    is refused once its tokens pass the limit, while a Classify of 5,000 characters and the
    health checks keep being answered."""
    stub = pb_grpc.InferenceStub(channel)
    big = pb.TokenizeRequest(inputs=[pb.TextInput(text=text_of(MAX_CHARS))] * 256, model="cls")
    errors: list[grpc.RpcError] = []

    def tokenize() -> None:
        errors.append(refusal(lambda: stub.Tokenize(big, timeout=300)))

    with watched(served.address, probe_text=text_of(5000)) as failures:
        callers = [threading.Thread(target=tokenize) for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
    assert len(errors) == 3
    for error in errors:
        assert_refused(error, f"max_tokens_per_request={MAX_TOKENS}", "of 256 items")
    assert failures == []


def test_load_model_with_millions_of_workers_is_refused_against_the_cores(served, admin, stub):
    with watched(served.address) as failures:
        request = pb.LoadModelRequest(name="many", path="/nowhere", workers_per_device=3_000_000)
        error = refusal(lambda: admin("LoadModel", request))
    assert_refused(error, "3000000", "max_workers_per_device=")
    info = stub.ModelInfo(pb.ModelInfoRequest(model="cls"), timeout=30)
    assert info.max_workers_per_device >= 1
    assert f"max_workers_per_device={info.max_workers_per_device}" in error.details()
    assert failures == []


def test_load_model_with_a_path_too_long_for_any_file_system_is_refused(admin):
    error = refusal(lambda: admin("LoadModel", pb.LoadModelRequest(name="x", path="p" * 100_000)))
    assert_refused(error, "100000", "4096")


def test_echoed_input_is_cut_so_the_message_fits(stub, admin):
    request = pb.ClassifyRequest(inputs=inputs("a"), model="m" * 7000)
    error = refusal(lambda: stub.Classify(request, timeout=30))
    assert_refused(error, "7000 characters", codes={grpc.StatusCode.NOT_FOUND})
    forward = pb.ForwardRequest(inputs=inputs("a"), outputs=["o" * 1_000_000], model="cls")
    assert_refused(refusal(lambda: stub.Forward(forward, timeout=30)), "1000000 characters")
    named = pb.LoadModelRequest(name="n" * 7000, path="/nowhere")
    assert_refused(refusal(lambda: admin("LoadModel", named)), "7000 characters")


def test_model_info_gives_the_new_limits(stub):
    info = stub.ModelInfo(pb.ModelInfoRequest(model="nli"), timeout=30)
    assert (info.max_candidate_labels, info.max_targets) == (MAX_LABELS, MAX_TARGETS)
    assert (info.max_template_chars, info.max_text_chars) == (MAX_TEMPLATE, MAX_CHARS)


def test_the_metrics_endpoint_answers_metrics_alone_and_to_its_tokens(served):
    url = served.metrics_url
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        urllib.request.urlopen(url, timeout=10)
    assert unauthorized.value.code == 401
    headers = {"Authorization": f"bearer {METRICS_TOKEN}"}
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(urllib.request.Request(url + "x", headers=headers), timeout=10)
    assert elsewhere.value.code == 404
    text = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
    assert b"pipeserve_event_loop_lag_seconds_count" in text.read()


# Requests near each limit, generated: each is answered, or refused by the limit it passes,
# never with INTERNAL or UNKNOWN.

NEAR = st.integers(-2, 2)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_distilbert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_distilbert)


def near_count(stub, tokenizer, kind: str, offset: int, seed: int):
    """A request with a count near its limit: (rpc, request, the limit's name, whether over)."""
    if kind == "labels":
        labels = [f"label {seed} {i}" for i in range(MAX_LABELS + offset)]
        request = pb.ClassifyZeroShotRequest(inputs=["a"], candidate_labels=labels, model="nli")
        return stub.ClassifyZeroShot, request, "max_candidate_labels", offset > 0
    targets = [f"t{seed}x{i}" for i in range(MAX_TARGETS + offset)]
    request = pb.FillMaskRequest(inputs=["a [MASK]."], targets=targets, model="mlm")
    return stub.FillMask, request, "max_targets", offset > 0


def near_length(stub, tokenizer, kind: str, offset: int, seed: int):
    """A request with a length near its limit, as `near_count`."""
    if kind == "template":
        template = ("{} " + "x" * MAX_TEMPLATE)[: MAX_TEMPLATE + offset]
        request = pb.ClassifyZeroShotRequest(
            inputs=["a"], candidate_labels=["y"], hypothesis_template=template, model="nli"
        )
        return stub.ClassifyZeroShot, request, "max_template_chars", offset > 0
    if kind == "chars":
        request = pb.ClassifyRequest(inputs=inputs(text_of(MAX_CHARS + offset)), model="cls")
        return stub.Classify, request, "max_text_chars", offset > 0
    # About 6,000 to 7,000 tokens as windows overlapping by about 100: their tokens in all
    # straddle the limit, as transformers' tokenizer counts them.
    text, stride = "word " * (6000 + seed % 1000), 100 + offset
    windows = tokenizer(
        text, truncation=True, max_length=512, stride=stride, return_overflowing_tokens=True
    )
    over = sum(map(len, windows["input_ids"])) > MAX_TOKENS
    request = pb.ClassifyRequest(inputs=inputs(text), stride=stride, model="cls")
    return stub.Classify, request, "max_tokens_per_request", over


NEAR_LIMITS = {"labels": near_count, "targets": near_count, "template": near_length,
               "chars": near_length, "stride": near_length}  # fmt: skip


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(sorted(NEAR_LIMITS)), offset=NEAR, seed=st.integers(0, 2**16))
def test_requests_near_each_limit_are_answered_or_refused_by_it(
    stub, hf_tokenizer, kind, offset, seed
):
    rpc, request, named, over = NEAR_LIMITS[kind](stub, hf_tokenizer, kind, offset, seed)
    try:
        rpc(request, timeout=60)
    except grpc.RpcError as error:
        assert over, (kind, offset, error.details()[:300])
        assert_refused(error, named)
    else:
        assert not over, (kind, offset)


def test_more_front_ends_than_pool_threads_still_respawn_a_dead_worker(tiny_distilbert):
    """Front ends and workers are watched without a thread each: with more front ends than
    the default thread pool has threads (cores + 4), a killed worker is still reaped and
    respawned, and calls are answered again."""
    count = min(32, (os.cpu_count() or 1) + 4)
    server = launch_server(tiny_distilbert, "--frontends", str(count))
    try:
        [before] = workers(server.address)
        os.kill(before.pid, signal.SIGKILL)

        def respawned() -> bool:
            [now] = workers(server.address)
            return now.ready and now.pid not in (0, before.pid)

        wait_until(respawned, timeout=120)
        with grpc.insecure_channel(server.address) as own:
            request = pb.ClassifyRequest(inputs=inputs("a fine film"))
            assert pb_grpc.InferenceStub(own).Classify(request, timeout=60).results
    finally:
        server.stop()


def test_a_stream_is_served_after_the_default_model_is_unloaded(stub, admin, tiny_distilbert):
    admin("UnloadModel", pb.UnloadModelRequest(name="cls", grace_s=1))
    try:
        request = pb.ClassifyRequest(inputs=inputs("a fine film"), model="nli")
        stream = iter([pb.ClassifyStreamRequest(id="1", request=request)])
        answers = list(stub.ClassifyStream(stream, timeout=60))
        assert [a.id for a in answers] == ["1"]
        assert answers[0].WhichOneof("outcome") == "response", answers[0]
    finally:  # the module's other tests call cls, in whatever order they run
        admin("LoadModel", pb.LoadModelRequest(name="cls", path=str(tiny_distilbert)))
