"""What the server sends is what the proto declares: the metadata keys, every inference
response's timings (each ClassifyStream answer its own), and a refused call's
google.rpc.Status. The protos themselves: tests/unit/test_protos.py."""

import pytest


def test_the_metadata_keys_the_server_sends_are_the_ones_the_proto_declares(address):
    from importlib.metadata import version

    import grpc

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
    from pipeserve.wire import RETRY_AFTER_KEY

    assert RETRY_AFTER_KEY == "retry-after-ms"
    request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="fine")], all_labels=True)
    with grpc.insecure_channel(address) as channel:
        response, call = InferenceStub(channel).Classify.with_call(request, timeout=60)
        info = InferenceStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=60)
    # Stage times travel in the response alone, not again as text in trailers.
    assert not any(key.startswith("pipeserve-") for key, _ in call.trailing_metadata())
    assert response.timings.forward_ms > 0
    assert len(response.results[0].labels) == 2  # all_labels: every label, no sentinel
    # ModelInfo says task, precision and backend as enums, the backend's version beside.
    assert info.task_type == pb.TASK_TEXT_CLASSIFICATION
    assert info.compute_dtype == pb.COMPUTE_DTYPE_FLOAT32
    assert info.quantization == pb.QUANTIZATION_NONE
    assert info.backend_type == pb.BACKEND_TORCH
    assert info.backend_version == version("torch")


def _assert_ran(timings, name: str, postprocess: bool) -> None:
    """`timings` of a call that tokenized, queued and ran the model (and postprocessed)."""
    assert timings.tokenize_ms > 0, name
    assert timings.queue_ms >= 0, name
    assert timings.forward_ms > 0, name
    assert (timings.postprocess_ms > 0) == postprocess, name


def test_every_inference_response_carries_its_timings(every_task):
    """As Timings says: every unary RPC that runs the model, whatever its task, and Tokenize."""
    import grpc

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

    texts = ["Paris is the [MASK] of France.", "I hate this so much!"]
    requests = {
        "Forward": pb.ForwardRequest(inputs=[pb.ModelInput(text=t) for t in texts]),
        "Classify": pb.ClassifyRequest(inputs=[pb.ModelInput(text=t) for t in texts]),
        "ClassifyTokens": pb.ClassifyTokensRequest(inputs=texts, model="ner"),
        "FillMask": pb.FillMaskRequest(inputs=texts[:1], model="mlm"),
        "Embed": pb.EmbedRequest(inputs=texts, model="enc"),
        "Rerank": pb.RerankRequest(query="a query", documents=texts, model="ce"),
        "ClassifyZeroShot": pb.ClassifyZeroShotRequest(
            inputs=texts, candidate_labels=["a", "b"], model="nli"
        ),
    }
    methods = pb.DESCRIPTOR.services_by_name["Inference"].methods
    unary = {method.name for method in methods if not method.client_streaming}
    # Every unary RPC but the three that run no model.
    assert set(requests) == unary - {"Tokenize", "ModelInfo", "ListModels"}
    with grpc.insecure_channel(every_task.address) as channel:
        stub = InferenceStub(channel)
        for name, request in requests.items():
            response = getattr(stub, name)(request, timeout=60)
            # Forward returns the model's outputs as they are: nothing to postprocess.
            _assert_ran(response.timings, name, postprocess=name != "Forward")
        tokenized = stub.Tokenize(
            pb.TokenizeRequest(inputs=[pb.TextInput(text=t) for t in texts]), timeout=60
        )
    timings = tokenized.timings
    assert timings.tokenize_ms > 0
    assert timings.queue_ms == timings.forward_ms == timings.postprocess_ms == 0


def test_every_classify_stream_answer_carries_its_own_timings(address):
    import grpc

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

    texts = ["fine", "I hate this so much!", "a " * 300]
    requests = [
        pb.ClassifyStreamRequest(
            id=str(i), request=pb.ClassifyRequest(inputs=[pb.ModelInput(text=t)])
        )
        for i, t in enumerate(texts)
    ]
    requests.append(
        pb.ClassifyStreamRequest(id="empty", request=pb.ClassifyRequest(inputs=[pb.ModelInput()]))
    )
    with grpc.insecure_channel(address) as channel:
        answered = InferenceStub(channel).ClassifyStream(iter(requests), timeout=60)
        answers = {answer.id: answer for answer in answered}
    assert set(answers) == {"0", "1", "2", "empty"}
    for request_id in ("0", "1", "2"):
        assert answers[request_id].WhichOneof("outcome") == "response"
        _assert_ran(answers[request_id].response.timings, request_id, postprocess=True)
    # Each answer's own times, not one figure for the stream.
    tokenize = {i: answers[i].response.timings.tokenize_ms for i in ("0", "1", "2")}
    assert len(set(tokenize.values())) == 3
    refused = answers["empty"]
    assert refused.WhichOneof("outcome") == "status"
    assert refused.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_refused_call_carries_its_google_rpc_status(address):
    import grpc
    from google.rpc import status_pb2

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub

    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        InferenceStub(channel).Classify(
            pb.ClassifyRequest(inputs=[pb.ModelInput(text="")]), timeout=60
        )
    trailer = dict(refused.value.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(trailer)
    assert status.code == refused.value.code().value[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == refused.value.details()
