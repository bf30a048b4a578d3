"""Models loaded and unloaded while the server serves (the Admin service, --admin-token-file):
a model loaded at runtime answers exactly as in-process, an unload lets calls in flight finish
and refuses new ones with NOT_FOUND, and neither disturbs the other models' callers. Without
an admin token (or the flag) the admin RPCs are refused.

Each test of the shared server leaves it serving what it served before (`clf` and `enc`):
a test that unloads a model unloads one it loaded itself, so the tests run in any order.
"""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeserve.client import AdminClient, AsyncAdminClient, Client, PipeserveError
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1.pipeserve_pb2_grpc import AdminStub
from tests.helpers import in_process, sst2_sentences
from tests.servers import launch_server, paused, pipeserve, scrape, wait_until

# A server of its own with the admin service, whose models the tests change.
pytestmark = pytest.mark.slow

ATOL = 1e-5
SERVICE = "pipeserve.v1.Inference"
ADMIN_TOKEN = "admin-secret"
INFERENCE_TOKEN = "inference-secret"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("admin-tokens")
    (folder / "admin").write_text(f"# operators\n{ADMIN_TOKEN}\n")
    (folder / "inference").write_text(f"{INFERENCE_TOKEN}\n")
    return folder


@pytest.fixture(scope="module")
def served(tiny_distilbert, tiny_bert, tokens):
    """`clf` (the default) and `enc`, a worker each, with admin and inference tokens."""
    server = launch_server(
        f"clf={tiny_distilbert}",
        "--model",
        f"enc={tiny_bert}",
        "--admin-token-file",
        str(tokens / "admin"),
        "--auth-token-file",
        str(tokens / "inference"),
        "--auth-open-health",
        "--metrics-port",
        "0",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    with Client(served.address, token=INFERENCE_TOKEN, timeout=120) as shared:
        yield shared


@pytest.fixture(scope="module")
def admin(served):
    with AdminClient(served.address, token=ADMIN_TOKEN) as shared:
        yield shared


@pytest.fixture(scope="module")
def health(served):
    with grpc.insecure_channel(served.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

        yield status


class Hammer:
    """Callers of `clf` (one sentence a call, several threads) until stopped; every answer
    is checked against the in-process logits, and any failed call fails the test."""

    def __init__(self, client: Client, logits: dict[str, np.ndarray]) -> None:
        self._client = client
        self._logits = logits
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(2)
        self._callers = [self._pool.submit(self._call, i) for i in range(2)]

    def _call(self, first: int) -> tuple[int, float]:
        sentences = list(self._logits)
        calls, worst, i = 0, 0.0, first
        while not self._stop.is_set() or calls == 0:
            sentence = sentences[i % len(sentences)]
            (scores,) = self._client.classify(
                [sentence], model="clf", function_to_apply="none", top_k=None
            )
            got = np.array([s.score for s in sorted(scores, key=lambda s: s.index)])
            worst = max(worst, float(np.abs(got - self._logits[sentence]).max()))
            calls, i = calls + 1, i + 2
        return calls, worst

    def stop(self) -> tuple[int, float]:
        """Calls made and the largest difference; raises the first failed call's error."""
        self._stop.set()
        results = [caller.result() for caller in self._callers]
        self._pool.shutdown()
        return sum(c for c, _ in results), max(w for _, w in results)


def _listed(client: Client) -> list[str]:
    return [m.name for m in client.list_models()]


def test_a_model_loaded_and_unloaded_while_callers_use_another(
    served, client, admin, health, tokens, tiny_bert_ner, tiny_logits
):
    """Loads `ner`: it answers as in-process; then unloads it with the CLI. `clf` is called
    throughout, and none of its calls fails."""
    from transformers import AutoModelForTokenClassification

    hammer = Hammer(client, tiny_logits)
    info = admin.load_model("ner", str(tiny_bert_ner), task="token-classification")
    calls, worst_clf = hammer.stop()
    print(f"clf during the load: {calls} calls, largest difference {worst_clf:.2e}")
    assert worst_clf <= ATOL

    assert (info.name, info.model, info.task) == ("ner", str(tiny_bert_ner), "token-classification")
    assert [w.ready for w in info.workers] == [True]
    assert _listed(client) == ["clf", "enc", "ner"]
    assert health(f"{SERVICE}/ner") == SERVING
    assert health("") == SERVING
    before = scrape(served.metrics_url)
    assert before[("pipeserve_workers_alive", (("model", "ner"),))] == 1

    sentences = sst2_sentences(24)
    (expected,) = in_process(tiny_bert_ner, AutoModelForTokenClassification, sentences, "logits")
    chunks = [sentences[i : i + 3] for i in range(0, len(sentences), 3)]
    with ThreadPoolExecutor(8) as pool:
        outputs = list(
            pool.map(lambda c: client.forward(c, model="ner", outputs=["logits"]), chunks)
        )
    worst = 0.0
    for i, output in enumerate(outputs):
        for j, length in enumerate(output.sequence_lengths):
            got = output["logits"][j, :length]
            worst = max(worst, float(np.abs(got - expected[3 * i + j]).max()))
    print(f"largest difference of the loaded model: logits {worst:.2e}")
    assert worst <= ATOL
    counted = (("code", "OK"), ("model", "ner"), ("rpc", "Forward"))
    after = scrape(served.metrics_url)[("pipeserve_requests_total", counted)]
    assert after - before.get(("pipeserve_requests_total", counted), 0.0) == len(chunks)

    hammer = Hammer(client, tiny_logits)
    unloaded = pipeserve(
        "admin", "unload", "ner", "--target", served.address, "--token-file", str(tokens / "admin")
    )
    calls, worst = hammer.stop()
    assert unloaded.returncode == 0, unloaded.stderr
    assert json.loads(unloaded.stdout) == {"name": "ner", "calls_cut": 0}
    print(f"clf during the unload: {calls} calls, largest difference {worst:.2e}")
    assert worst <= ATOL

    with pytest.raises(PipeserveError) as refused:
        client.forward(["gone"], model="ner")
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    assert "served models: clf, enc" in refused.value.details
    assert _listed(client) == ["clf", "enc"]
    assert health(f"{SERVICE}/ner") == NOT_SERVING
    assert health("") == SERVING  # the models still served all are
    assert ("pipeserve_workers_alive", (("model", "ner"),)) not in scrape(served.metrics_url)


def test_an_unload_lets_calls_in_flight_finish_and_refuses_new_ones(
    client, admin, health, tiny_bert
):
    from transformers import AutoModel

    text = "a call already on its way"
    ((expected,),) = in_process(tiny_bert, AutoModel, [text], "last_hidden_state")
    admin.load_model("spare", str(tiny_bert))
    (worker,) = client.model_info(model="spare").workers
    with ThreadPoolExecutor(2) as pool:
        with paused(worker.pid):
            in_flight = pool.submit(client.forward, [text], model="spare")
            wait_until(lambda: client.model_info(model="spare").workers[0].busy)
            unloading = pool.submit(admin.unload_model, "spare")
            wait_until(lambda: _listed(client) == ["clf", "enc"])
            with pytest.raises(PipeserveError) as refused:
                client.forward(["too late"], model="spare")
            assert refused.value.code is grpc.StatusCode.NOT_FOUND
            assert health(f"{SERVICE}/spare") == NOT_SERVING
            # The unload waits for the call, which waits for the held worker.
            assert not in_flight.done() and not unloading.done()
        output = in_flight.result(timeout=60)
        assert unloading.result(timeout=60) == 0
    difference = float(np.abs(output["last_hidden_state"][0] - expected).max())
    print(f"largest difference of the call in flight: {difference:.2e}")
    assert difference <= ATOL
    assert client.classify(["still here"], model="clf")  # the default goes on


def test_admin_calls_need_an_admin_token(served, client, tiny_bert):
    request = pb.UnloadModelRequest(name="clf")
    with grpc.insecure_channel(served.address) as channel:
        stub = AdminStub(channel)
        for metadata in (
            None,
            (("authorization", "Bearer wrong"),),
            (("authorization", f"Bearer {INFERENCE_TOKEN}"),),  # not an admin token
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.UnloadModel(request, metadata=metadata, timeout=30)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "clf" in _listed(client)
    with AdminClient(served.address, token=INFERENCE_TOKEN) as impostor:
        with pytest.raises(PipeserveError) as refused:
            impostor.load_model("again", str(tiny_bert))
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_admin_refusals_name_the_problem(served, admin, tokens, tiny_bert, tmp_path):
    def refusal(call) -> PipeserveError:
        with pytest.raises(PipeserveError) as refused:
            call()
        return refused.value

    exists = refusal(lambda: admin.load_model("clf", str(tiny_bert)))
    assert exists.code is grpc.StatusCode.ALREADY_EXISTS and "'clf'" in exists.details
    unknown = refusal(lambda: admin.unload_model("nope"))
    assert unknown.code is grpc.StatusCode.NOT_FOUND
    assert "served models: clf, enc" in unknown.details
    bad = refusal(lambda: admin.load_model("x", str(tiny_bert), dtype="float64"))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT and "dtype" in bad.details
    named = refusal(lambda: admin.load_model("no spaces", str(tiny_bert)))
    assert named.code is grpc.StatusCode.INVALID_ARGUMENT
    missing = refusal(lambda: admin.load_model("x", str(tmp_path / "nothing")))
    assert missing.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "no such folder" in missing.details and "\n" not in missing.details

    async def twice() -> PipeserveError:
        async with AsyncAdminClient(served.address, token=ADMIN_TOKEN) as aio:
            with pytest.raises(PipeserveError) as refused:
                await aio.load_model("clf", str(tiny_bert))
            return refused.value

    assert asyncio.run(twice()).code is grpc.StatusCode.ALREADY_EXISTS
    cli = pipeserve(
        "admin", "unload", "nope", "--target", served.address, "--token-file", str(tokens / "admin")
    )
    assert cli.returncode == 1 and "NOT_FOUND" in cli.stderr


def test_without_the_flag_the_admin_rpcs_are_unimplemented(address, tiny_bert):
    with AdminClient(address, token=ADMIN_TOKEN) as admin, pytest.raises(PipeserveError) as refused:
        admin.load_model("x", str(tiny_bert))
    assert refused.value.code is grpc.StatusCode.UNIMPLEMENTED


def test_an_admin_token_must_not_be_an_inference_token(tiny_distilbert, tokens):
    shared = str(tokens / "inference")
    with pytest.raises(RuntimeError) as refused:
        launch_server(tiny_distilbert, "--auth-token-file", shared, "--admin-token-file", shared)
    assert "a token is in both --auth-token-file and --admin-token-file" in str(refused.value)
