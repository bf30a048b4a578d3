"""The committed stubs are what scripts/gen_protos.sh produces from protos/ today."""

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import launch_server, model_flags, venv_path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("pipeserve_pb2.py", "pipeserve_pb2.pyi", "pipeserve_pb2_grpc.py")


def test_generated_stubs_are_up_to_date(tmp_path):
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    (tmp_path / "src/pipeserve/v1").mkdir(parents=True)
    # The script runs `python` from PATH: this interpreter's, activated or not.
    env = {**os.environ, "PATH": venv_path()}
    subprocess.run(["bash", str(tmp_path / "scripts/gen_protos.sh")], check=True, env=env)
    for name in GENERATED:
        fresh = (tmp_path / "src/pipeserve/v1" / name).read_text()
        committed = (ROOT / "src/pipeserve/v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen_protos.sh"


def test_proto_package_is_versioned():
    from pipeserve.v1 import pipeserve_pb2

    assert pipeserve_pb2.DESCRIPTOR.package == "pipeserve.v1"
    assert set(pipeserve_pb2.DESCRIPTOR.services_by_name["Inference"].methods_by_name) == {
        "Tokenize",
        "Forward",
        "Classify",
        "ClassifyStream",
        "ClassifyTokens",
        "FillMask",
        "ModelInfo",
        "Embed",
        "Rerank",
        "ClassifyZeroShot",
        "ListModels",
    }
    # Loading and unloading change the server: a service of its own, off by default.
    admin = pipeserve_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert set(admin.methods_by_name) == {"LoadModel", "UnloadModel"}


def test_every_message_field_and_enum_value_is_documented():
    """Generated code in any language carries these comments to polyglot users."""
    lines = (ROOT / "protos/pipeserve/v1/pipeserve.proto").read_text().splitlines()
    declaration = re.compile(
        r"^\s*(message|enum|service|rpc|oneof)\s|^\s*(optional |repeated )?[\w.<>, ]+ \w+ = \d+;"
        r"|^\s*[A-Z_0-9]+ = \d+;"
    )
    undocumented = [
        line.strip()
        for previous, line in itertools.pairwise(lines)
        if declaration.match(line)
        and not previous.strip().startswith("//")
        and not line.strip().startswith("oneof")
    ]
    assert undocumented == []


def test_unary_rpcs_are_declared_free_of_side_effects():
    """The client's retry on UNAVAILABLE relies on it; the .proto says so to every language."""
    from google.protobuf.descriptor_pb2 import MethodOptions

    from pipeserve.v1 import pipeserve_pb2

    methods = pipeserve_pb2.DESCRIPTOR.services_by_name["Inference"].methods_by_name
    levels = {name: method.GetOptions().idempotency_level for name, method in methods.items()}
    assert levels == {
        "Tokenize": MethodOptions.NO_SIDE_EFFECTS,
        "Forward": MethodOptions.NO_SIDE_EFFECTS,
        "Classify": MethodOptions.NO_SIDE_EFFECTS,
        "ModelInfo": MethodOptions.NO_SIDE_EFFECTS,
        "ListModels": MethodOptions.NO_SIDE_EFFECTS,
        "ClassifyTokens": MethodOptions.NO_SIDE_EFFECTS,
        "FillMask": MethodOptions.NO_SIDE_EFFECTS,
        "ClassifyStream": MethodOptions.IDEMPOTENCY_UNKNOWN,
        "Embed": MethodOptions.NO_SIDE_EFFECTS,
        "Rerank": MethodOptions.NO_SIDE_EFFECTS,
        "ClassifyZeroShot": MethodOptions.NO_SIDE_EFFECTS,
    }


def test_the_metadata_keys_the_server_sends_are_the_ones_the_proto_declares(address):
    import grpc

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
    from pipeserve.wire import RETRY_AFTER_KEY, STAGE_TIME_KEYS

    assert STAGE_TIME_KEYS == {
        "tokenize": "pipeserve-tokenize-ms",
        "queue": "pipeserve-queue-ms",
        "forward": "pipeserve-forward-ms",
    }
    assert RETRY_AFTER_KEY == "retry-after-ms"
    request = pb.ClassifyRequest(inputs=[pb.ModelInput(text="fine")], all_labels=True)
    with grpc.insecure_channel(address) as channel:
        response, call = InferenceStub(channel).Classify.with_call(request, timeout=60)
        info = InferenceStub(channel).ModelInfo(pb.ModelInfoRequest(), timeout=60)
    sent = {key for key, _ in call.trailing_metadata()}
    assert set(STAGE_TIME_KEYS.values()) <= sent
    assert len(response.results[0].labels) == 2  # all_labels: every label, no sentinel
    # ModelInfo says task and precision as enums too, next to the v1 strings.
    assert (info.task, info.task_type) == ("text-classification", pb.TASK_TEXT_CLASSIFICATION)
    assert (info.dtype, info.compute_dtype) == ("float32", pb.COMPUTE_DTYPE_FLOAT32)
    assert info.quantization == pb.QUANTIZATION_NONE
    assert info.backend_type == pb.BACKEND_TORCH and info.backend.startswith("torch ")


@pytest.fixture(scope="module")
def every_task(tiny_distilbert, task_models):
    """A server of a model for each RPC; the classifier is the default."""
    server = launch_server(f"clf={tiny_distilbert}", *model_flags(task_models))
    yield server
    server.stop()


@pytest.mark.slow
def test_every_unary_inference_rpc_sends_the_timing_keys(every_task):
    """As TrailingMetadataKey says: each unary RPC that runs the model, whatever its task."""
    import grpc

    from pipeserve.v1 import pipeserve_pb2 as pb
    from pipeserve.v1.pipeserve_pb2_grpc import InferenceStub
    from pipeserve.wire import STAGE_TIME_KEYS

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
    # Every unary RPC but the two that run no model.
    assert set(requests) == unary - {"Tokenize", "ModelInfo", "ListModels"}
    with grpc.insecure_channel(every_task.address) as channel:
        stub = InferenceStub(channel)
        for name, request in requests.items():
            _, call = getattr(stub, name).with_call(request, timeout=60)
            times = dict(call.trailing_metadata())
            assert set(STAGE_TIME_KEYS.values()) <= set(times), name
            assert float(times[STAGE_TIME_KEYS["forward"]]) > 0, name


def test_a_refused_call_carries_its_google_rpc_status(address):
    import grpc
    import pytest
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
