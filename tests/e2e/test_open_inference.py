"""The Open Inference Protocol (KServe v2 gRPC, `inference.GRPCInferenceService`): the real
Triton client (tritonclient, from PyPI) and stubs compiled from the vendored proto call one
server of several tiny models, and every mapping's answers equal transformers in-process (or
sentence-transformers, for embeddings) within 1e-5."""

import contextlib
import io
import json
import re
import shlex
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from pipeserve.client import Client
from pipeserve.oip import grpc_service_pb2 as oip
from pipeserve.oip import grpc_service_pb2_grpc as oip_grpc
from pipeserve.v1 import pipeserve_pb2 as pb
from pipeserve.v1 import pipeserve_pb2_grpc as pb_grpc
from tests.helpers import ROOT, sst2_sentences
from tests.servers import (
    OWN_CONNECTION,
    ServerProcess,
    by_frontend,
    launch_server,
    paused,
    wait_until,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def server(every_task) -> ServerProcess:
    """The server of a model per task (conftest's every_task_file, named as task_models names
    them); `wait`, the classifier again, holds a batch open for 3 s or two items, so that two
    calls share it."""
    return every_task


@pytest.fixture(scope="module")
def triton_client(server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.address)
    yield client
    client.close()


def _texts(name: str, texts: list[str], rows_of_one: bool = True) -> triton.InferInput:
    """A BYTES input, one text a row: [N, 1] (as Triton's examples send it) or [N]."""
    array = np.array([t.encode() for t in texts], dtype=np.object_)
    if rows_of_one:
        array = array.reshape(-1, 1)
    tensor = triton.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def _ints(name: str, array: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), "INT64")
    tensor.set_data_from_numpy(array.astype(np.int64))
    return tensor


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_tritonclient_classifies_as_transformers(triton_client, tiny_logits):
    sentences = list(tiny_logits)[:8]
    result = triton_client.infer(
        "clf", [_texts("text", sentences)], parameters={"all_labels": True}
    )
    labels, scores = result.as_numpy("label"), result.as_numpy("score")
    assert labels.shape == scores.shape == (8, 2) and scores.dtype == np.float32
    diffs = []
    for sentence, row_labels, row_scores in zip(sentences, labels, scores, strict=True):
        expected = _softmax(tiny_logits[sentence])
        by_label = dict(zip((b.decode() for b in row_labels), row_scores, strict=True))
        got = np.array([by_label["NEGATIVE"], by_label["POSITIVE"]])
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
        diffs.append(np.abs(got - expected).max())
        assert list(row_scores) == sorted(row_scores, reverse=True)  # best first
    print(f"ModelInfer classify max |score diff| {max(diffs):.3g}")


def test_top_k_one_by_default_and_function_to_apply(triton_client, tiny_logits):
    sentences = list(tiny_logits)[8:12]
    plain = triton_client.infer("clf", [_texts("text", sentences, rows_of_one=False)])
    assert plain.as_numpy("label").shape == (4, 1)
    raw = triton_client.infer(
        "clf", [_texts("text", sentences)], parameters={"function_to_apply": "none", "top_k": 2}
    )
    for sentence, labels, scores in zip(
        sentences, raw.as_numpy("label"), raw.as_numpy("score"), strict=True
    ):
        index = {b"NEGATIVE": 0, b"POSITIVE": 1}
        got = [tiny_logits[sentence][index[label]] for label in labels]
        np.testing.assert_allclose(scores, got, rtol=0, atol=ATOL)
        assert plain.as_numpy("label")[sentences.index(sentence), 0] == labels[0]


def test_tritonclient_embeds_as_sentence_transformers(triton_client, task_models):
    from sentence_transformers import SentenceTransformer

    sentences = sst2_sentences(6)
    result = triton_client.infer("enc", [_texts("text", sentences)], parameters={"normalize": True})
    embeddings = result.as_numpy("embedding")
    expected = SentenceTransformer(str(task_models["enc"]), device="cpu").encode(
        sentences, normalize_embeddings=True
    )
    assert embeddings.shape == (6, 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=ATOL)
    print(f"ModelInfer embed max |diff| {np.abs(embeddings - expected).max():.3g}")


def test_tritonclient_runs_a_raw_forward_as_transformers(
    triton_client, tiny_logits, minilm_path, task_models
):
    import torch
    from transformers import AutoModel, AutoTokenizer

    sentences = list(tiny_logits)[:5]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    inputs = [_ints(name, batch[name]) for name in ("input_ids", "attention_mask")]
    logits = triton_client.infer("clf", inputs).as_numpy("logits")
    expected_logits = np.stack([tiny_logits[s] for s in sentences])
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=ATOL)
    print(f"ModelInfer raw logits max |diff| {np.abs(logits - expected_logits).max():.3g}")
    # An encoder's per-token output, with token type ids: zero-padded back to the ids' width.
    types = np.zeros_like(batch["input_ids"])
    types[:, 3:] = 1
    inputs.append(_ints("token_type_ids", types))
    wanted = [triton.InferRequestedOutput("last_hidden_state")]
    states = triton_client.infer("enc", inputs, outputs=wanted).as_numpy("last_hidden_state")
    assert states.shape == (*batch["input_ids"].shape, 32)
    model = AutoModel.from_pretrained(task_models["enc"]).eval()
    for row, length in enumerate(batch["attention_mask"].sum(axis=1)):
        with torch.inference_mode():
            expected = model(
                input_ids=torch.tensor(batch["input_ids"][row : row + 1, :length]),
                token_type_ids=torch.tensor(types[row : row + 1, :length]),
            ).last_hidden_state[0]
        np.testing.assert_allclose(states[row, :length], expected.numpy(), rtol=0, atol=ATOL)
        print(f"ModelInfer raw states row {row} max |diff| "
              f"{np.abs(states[row, :length] - expected.numpy()).max():.3g}")  # fmt: skip
        assert not states[row, length:].any()


def _json_rows(result, name: str = "output") -> list:
    return [json.loads(row) for row in result.as_numpy(name)]


def test_token_classification_answers_the_pipelines_entities(triton_client, task_models):
    from transformers import pipeline

    sentences = sst2_sentences(4)
    reference = pipeline(
        "token-classification", model=str(task_models["ner"]), aggregation_strategy="simple"
    )
    result = triton_client.infer(
        "ner", [_texts("text", sentences)], parameters={"aggregation_strategy": "simple"}
    )
    answers = _json_rows(result)
    assert sum(map(len, answers)) > 0
    for got, expected in zip(answers, reference(sentences), strict=True):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got] == [
            (e["entity_group"], e["word"], e["start"], e["end"]) for e in expected
        ]
        np.testing.assert_allclose(
            [e["score"] for e in got], [e["score"] for e in expected], rtol=0, atol=ATOL
        )


def test_fill_mask_answers_the_pipelines_candidates(triton_client, task_models):
    from transformers import pipeline

    texts = ["the movie was [MASK] .", "a [MASK] and [MASK] film"]
    reference = pipeline("fill-mask", model=str(task_models["mlm"]), top_k=3)
    result = triton_client.infer("mlm", [_texts("text", texts)], parameters={"top_k": 3})
    for got, expected in zip(_json_rows(result), reference(texts), strict=True):
        # One mask: its candidates; several: a list of them a mask, as the pipeline.
        masks = [got] if isinstance(got[0], dict) else got
        wanted = [expected] if isinstance(expected[0], dict) else expected
        for candidates, reference_candidates in zip(masks, wanted, strict=True):
            assert [(c["token"], c["token_str"], c["sequence"]) for c in candidates] == [
                (c["token"], c["token_str"], c["sequence"]) for c in reference_candidates
            ]
            np.testing.assert_allclose(
                [c["score"] for c in candidates],
                [c["score"] for c in reference_candidates],
                rtol=0,
                atol=ATOL,
            )


def test_zero_shot_answers_the_pipelines_labels(triton_client, task_models):
    from transformers import pipeline

    sentences = sst2_sentences(3)
    labels = ["sports", "politics", "film"]
    reference = pipeline("zero-shot-classification", model=str(task_models["nli"]), device="cpu")
    result = triton_client.infer(
        "nli",
        [_texts("text", sentences)],
        parameters={"candidate_labels": ",".join(labels), "multi_label": True},
    )
    expected = reference(sentences, candidate_labels=labels, multi_label=True)
    for got, want in zip(_json_rows(result), expected, strict=True):
        assert (got["sequence"], got["labels"]) == (want["sequence"], want["labels"])
        np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=ATOL)


def _pair_logits(path, pairs: list[tuple[str, str]]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return np.stack(
            [model(**tokenizer(a, b, return_tensors="pt")).logits[0].numpy() for a, b in pairs]
        )


def test_a_query_input_reranks_and_text_pairs_classify(triton_client, task_models):
    query, documents = "a funny film", sst2_sentences(4)
    expected = _pair_logits(task_models["ce"], [(query, d) for d in documents])
    ranked = triton_client.infer(
        "ce",
        [_texts("query", [query]), _texts("text", documents)],
        parameters={"raw_scores": True},
    )
    # Each document's score in its row, in the order sent.
    np.testing.assert_allclose(ranked.as_numpy("score"), expected, rtol=0, atol=ATOL)
    pairs = triton_client.infer(
        "ce",
        [_texts("text", [query] * 4), _texts("text_pair", documents)],
        parameters={"function_to_apply": "none"},
    )
    np.testing.assert_allclose(pairs.as_numpy("score"), expected, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def stubs(server) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


def test_typed_contents_in_give_typed_contents_out(stubs, tiny_logits):
    sentences = list(tiny_logits)[:3]
    request = oip.ModelInferRequest(model_name="clf", id="typed-1")
    request.inputs.add(name="text", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(
        s.encode() for s in sentences
    )
    request.parameters["function_to_apply"].string_param = "none"
    request.parameters["all_labels"].bool_param = True
    request.outputs.add(name="score")
    response = stubs.ModelInfer(request, timeout=60)
    assert (response.model_name, response.model_version, response.id) == ("clf", "1", "typed-1")
    assert not response.raw_output_contents
    [score] = response.outputs  # only the output asked for
    assert (score.name, score.datatype, list(score.shape)) == ("score", "FP32", [3, 2])
    got = np.array(score.contents.fp32_contents).reshape(3, 2)
    for sentence, row in zip(sentences, got, strict=True):
        np.testing.assert_allclose(row, sorted(tiny_logits[sentence], reverse=True), atol=ATOL)
    # Token ids typed too: int64_contents.
    ids = oip.ModelInferRequest(model_name="clf")
    ids.inputs.add(name="input_ids", datatype="INT64", shape=[1, 4]).contents.int64_contents.extend(
        [101, 2307, 3185, 102]
    )
    logits = stubs.ModelInfer(ids, timeout=60).outputs[0]
    assert (logits.name, list(logits.shape), len(logits.contents.fp32_contents)) == (
        "logits",
        [1, 2],
        2,
    )


def test_the_model_metadata_lists_each_mappings_tensors(stubs):
    def tensors(name: str) -> tuple[dict, dict]:
        meta = stubs.ModelMetadata(oip.ModelMetadataRequest(name=name), timeout=60)
        assert (meta.name, list(meta.versions), meta.platform) == (name, ["1"], "pipeserve")
        return (
            {t.name: (t.datatype, list(t.shape)) for t in meta.inputs},
            {t.name: (t.datatype, list(t.shape)) for t in meta.outputs},
        )

    raw = {"input_ids": ("INT64", [-1, -1]), "attention_mask": ("INT64", [-1, -1]),
           "token_type_ids": ("INT64", [-1, -1])}  # fmt: skip
    inputs, outputs = tensors("clf")
    assert inputs == {**raw, "text": ("BYTES", [-1]), "text_pair": ("BYTES", [-1])}
    assert {name: outputs[name] for name in ("logits", "label", "score")} == {
        "logits": ("FP32", [-1, 2]), "label": ("BYTES", [-1, -1]), "score": ("FP32", [-1, -1])
    }  # fmt: skip
    inputs, outputs = tensors("enc")
    assert inputs == {**raw, "text": ("BYTES", [-1])}
    assert outputs["embedding"] == ("FP32", [-1, 32])
    assert outputs["last_hidden_state"] == ("FP32", [-1, -1, 32])
    assert tensors("ce")[0]["query"] == ("BYTES", [1])
    for name in ("ner", "mlm", "nli"):
        assert tensors(name)[1]["output"] == ("BYTES", [-1])


def test_server_and_model_health_metadata_config_and_statistics(triton_client, tiny_logits):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("clf") and not triton_client.is_model_ready("nope")
    server = triton_client.get_server_metadata()
    assert server.name == "pipeserve" and server.version
    assert set(server.extensions) >= {"model_configuration", "statistics"}
    config = triton_client.get_model_config("clf").config
    assert config.max_batch_size > 0 and config.platform == "pipeserve"
    assert {i.name: list(i.dims) for i in config.input}["text"] == []
    before = triton_client.get_inference_statistics("clf").model_stats[0]
    triton_client.infer("clf", [_texts("text", list(tiny_logits)[:3])])
    after = triton_client.get_inference_statistics("clf").model_stats[0]
    assert after.inference_count == before.inference_count + 3
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns


@pytest.mark.parametrize(
    ("model", "inputs", "parameters", "code"),
    [
        ("nope", [("text", "BYTES", [1])], {}, grpc.StatusCode.NOT_FOUND),
        ("clf", [("text", "FP32", [1])], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clf", [("text", "BYTES", [1, 2])], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clf", [("texts", "BYTES", [1])], {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("clf", [("text", "BYTES", [1])], {"top_kk": 2}, grpc.StatusCode.INVALID_ARGUMENT),
        ("enc", [("text", "BYTES", [1]), ("text_pair", "BYTES", [1])], {},
         grpc.StatusCode.INVALID_ARGUMENT),
        ("ner", [("input_ids", "FP32", [1, 3])], {}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)  # fmt: skip
def test_errors_in_the_protocols_terms(triton_client, model, inputs, parameters, code):
    tensors = []
    for name, datatype, shape in inputs:
        tensor = triton.InferInput(name, shape, datatype)
        values = np.full(shape, b"x", dtype=np.object_) if datatype == "BYTES" else None
        tensor.set_data_from_numpy(
            values if values is not None else np.zeros(shape, dtype=np.float32)
        )
        tensors.append(tensor)
    with pytest.raises(InferenceServerException) as refused:
        triton_client.infer(model, tensors, parameters=parameters)
    assert refused.value.status() == f"StatusCode.{code.name}"


def test_the_stream_answers_each_request_by_its_id(triton_client, tiny_logits):
    sentences = list(tiny_logits)[:4]
    answers: list = []
    done = threading.Semaphore(0)

    def collect(result, error) -> None:
        answers.append((result, error))
        done.release()

    triton_client.start_stream(callback=collect)
    try:
        for index, sentence in enumerate(sentences):
            triton_client.async_stream_infer(
                "clf", [_texts("text", [sentence])], request_id=str(index),
                parameters={"function_to_apply": "none", "all_labels": True},
            )  # fmt: skip
        triton_client.async_stream_infer("nope", [_texts("text", ["x"])], request_id="bad")
        for _ in range(len(sentences) + 1):
            assert done.acquire(timeout=60)
    finally:
        triton_client.stop_stream()
    errors = [error for result, error in answers if error is not None]
    assert len(errors) == 1 and "not served" in str(errors[0])
    for result, _ in (a for a in answers if a[1] is None):
        sentence = sentences[int(result.get_response().id)]
        np.testing.assert_allclose(
            result.as_numpy("score")[0], sorted(tiny_logits[sentence], reverse=True), atol=ATOL
        )


def test_a_call_over_each_protocol_shares_one_batch(server, tiny_logits):
    """`wait` holds its batch open for two items: one v1 Forward and one ModelInfer, sent
    at once, make one batch between them."""
    sentences = list(tiny_logits)[:2]
    with Client(server.address, timeout=60) as client:
        before = client.model_info(model="wait").workers[0].batches
        start = threading.Barrier(2)

        def over_v1() -> np.ndarray:
            start.wait()
            return client.forward([sentences[0]], outputs=["logits"], model="wait").logits[0]

        def over_oip() -> np.ndarray:
            with triton.InferenceServerClient(server.address) as other:
                start.wait()
                inputs = [_texts("text", [sentences[1]])]
                answer = other.infer("wait", inputs, parameters={"function_to_apply": "none"})
                return answer

        with ThreadPoolExecutor(2) as pool:
            v1, answer = pool.submit(over_v1), pool.submit(over_oip)
            logits, answer = v1.result(), answer.result()
        assert client.model_info(model="wait").workers[0].batches == before + 1
    np.testing.assert_allclose(logits, tiny_logits[sentences[0]], rtol=0, atol=ATOL)
    assert answer.as_numpy("score")[0, 0] == pytest.approx(max(tiny_logits[sentences[1]]), abs=ATOL)


@pytest.mark.slow
def test_every_front_end_serves_the_protocol(every_task_two_front_ends, tiny_logits):
    sentences = list(tiny_logits)[:3]
    address = every_task_two_front_ends.address  # its default model: the tiny classifier
    channels = by_frontend(
        lambda: grpc.insecure_channel(address, options=OWN_CONNECTION),
        lambda channel: (
            pb_grpc.InferenceStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=60).frontend_pid
        ),
    )
    try:
        for channel in channels.values():
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelReady(oip.ModelReadyRequest(name=""), timeout=60).ready
            request = oip.ModelInferRequest()
            text = request.inputs.add(name="text", datatype="BYTES", shape=[3])
            text.contents.bytes_contents.extend(s.encode() for s in sentences)
            request.parameters["function_to_apply"].string_param = "none"
            response = stub.ModelInfer(request, timeout=60)
            scores = {o.name: o for o in response.outputs}["score"].contents.fp32_contents
            expected = [max(tiny_logits[s]) for s in sentences]
            np.testing.assert_allclose(scores, expected, rtol=0, atol=ATOL)
    finally:
        for channel in channels.values():
            channel.close()


# The README's example server names its models after real checkpoints; here, the tiny ones.
README_NAMES = {'"sentiment"': '"clf"', '"minilm"': '"enc"'}


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Open Inference Protocol")
    return readme[start : readme.index("\n## ", start)]


def _as_served(text: str, address: str) -> str:
    for name, served in README_NAMES.items():
        text = text.replace(name, served)
    return text.replace("localhost:50051", address)


def test_the_readmes_tritonclient_example_runs_as_written(server):
    [example] = re.findall(r"```python\n(.*?)```", _readme_section(), re.S)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(_as_served(example, server.address), {})
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("True [") and lines[0].endswith("'logits', 'label', 'score']")
    assert "(1, 32)" in lines  # the embedding's shape


def test_the_readmes_grpcurl_requests_run_as_written(server, stubs):
    commands = [
        shlex.split(_as_served(line, server.address))
        for block in re.findall(r"```bash\n(.*?)```", _readme_section(), re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("grpcurl")
    ]
    assert len(commands) == 4
    for words in commands:
        method = words[-1].removeprefix("inference.GRPCInferenceService/")
        request = json_format.Parse(
            words[words.index("-d") + 1], getattr(oip, f"{method}Request")()
        )
        getattr(stubs, method)(request, timeout=60)  # raises unless answered OK


@pytest.mark.slow
def test_while_the_model_loads_it_is_not_ready_and_calls_are_unavailable(tiny_distilbert):
    """The port opens before the worker has loaded the model; the worker is stopped as soon as
    it exists, so the model is certainly still loading while this looks."""
    server = launch_server(tiny_distilbert, until_listening=True)
    try:
        wait_until(lambda: bool(server.worker_processes()))
        (loading,) = server.worker_processes()
        client = triton.InferenceServerClient(server.address)
        with paused(loading):
            assert client.is_server_live()
            assert not client.is_server_ready() and not client.is_model_ready("")
            for call in (
                lambda: client.infer("", [_texts("text", ["too early"])]),
                lambda: client.get_model_metadata(""),
            ):
                with pytest.raises(InferenceServerException) as refused:
                    call()
                assert refused.value.status() == "StatusCode.UNAVAILABLE"
        wait_until(lambda: client.is_model_ready(""))
        assert client.infer("", [_texts("text", ["in time"])]).as_numpy("label").shape == (1, 1)
        client.close()
    finally:
        server.stop()
