"""The committed stubs are what scripts/gen_protos.sh produces from protos/ today."""

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import venv_path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = (
    "v1/pipeserve_pb2.py",
    "v1/pipeserve_pb2.pyi",
    "v1/pipeserve_pb2_grpc.py",
    "oip/grpc_service_pb2.py",
    "oip/grpc_service_pb2.pyi",
    "oip/grpc_service_pb2_grpc.py",
    "oip/model_config_pb2.py",
    "oip/model_config_pb2.pyi",
)


def test_generated_stubs_are_up_to_date(tmp_path):
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    for package in ("v1", "oip"):
        (tmp_path / "src/pipeserve" / package).mkdir(parents=True)
    # The script runs `python` from PATH: this interpreter's, activated or not.
    env = {**os.environ, "PATH": venv_path()}
    subprocess.run(["bash", str(tmp_path / "scripts/gen_protos.sh")], check=True, env=env)
    for name in GENERATED:
        fresh = (tmp_path / "src/pipeserve" / name).read_text()
        committed = (ROOT / "src/pipeserve" / name).read_text()
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


def test_dropped_fields_keep_their_numbers_and_names_reserved():
    """Fields that said what a typed field says are gone before 1.0, never to be reused."""
    from google.protobuf.descriptor_pb2 import FileDescriptorProto

    from pipeserve.v1 import pipeserve_pb2 as pb

    contract = FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(contract)
    messages = {message.name: message for message in contract.message_type}
    dropped = {
        "ModelInfoResponse": ({"task", "dtype", "backend"}, {2, 9, 22}),
        "ServedModel": ({"task"}, {6}),
        "ClassifyStreamResponse": ({"error"}, {3}),
        "TokenizeOptions": ({"padding"}, {1}),
    }
    for name, (fields, numbers) in dropped.items():
        message = messages[name]
        assert fields <= set(message.reserved_name), name
        reserved = {n for r in message.reserved_range for n in range(r.start, r.end)}
        assert numbers <= reserved, name
        assert not fields & {field.name for field in message.field}, name
    assert "StreamError" not in messages
    keys = next(e for e in contract.enum_type if e.name == "TrailingMetadataKey")
    assert [value.name for value in keys.value] == [
        "TRAILING_METADATA_KEY_UNSPECIFIED",
        "TRAILING_METADATA_KEY_RETRY_AFTER_MS",
    ]


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


def _proto_names(enum, prefix: str) -> dict[str, int]:
    """The .proto's option names, as the contract spells them."""
    return {
        value.name.removeprefix(prefix).lower(): value.number
        for value in enum.DESCRIPTOR.values
        if value.number and not value.name.endswith("UNSPECIFIED")
    }


def _cli_choices(command: str, option: str) -> list[str]:
    import argparse

    from pipeserve.client.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands.choices[command]
    return list(next(a for a in sub._actions if option in a.option_strings).choices)


def test_client_cli_and_server_take_the_proto_enums_names():
    """One table per option: the names the client takes and the CLI offers are the .proto
    enum's, and the server maps each of them to its own enum's member of that name."""
    from pipeserve.client import build
    from pipeserve.client.tasks import classify_tokens
    from pipeserve.server.edge import convert, service, service_tasks
    from pipeserve.server.pipeline.classify import ScoreFunction
    from pipeserve.server.pipeline.classify_tokens import Strategy
    from pipeserve.server.pipeline.inputs import Padding
    from pipeserve.server.pipeline.windows import WindowAggregation
    from pipeserve.v1 import pipeserve_pb2 as pb

    def function(name):
        return build.classify_request(["a"], function_to_apply=name).function_to_apply

    def window(name):
        return build.classify_request(["a"], stride=2, window_aggregation=name).window_aggregation

    def strategy(name):
        request = classify_tokens.classify_tokens_request(["a"], aggregation_strategy=name)
        return request.aggregation_strategy

    def padding(name):
        return build.tokenize_request(["a"], padding=name).padding

    options = [
        # enum, prefix, client request field, CLI command and option, server table and enum
        (
            pb.FunctionToApply,
            "FUNCTION_TO_APPLY_",
            function,
            ("classify", "--function-to-apply"),
            service._FUNCTION,
            ScoreFunction,
        ),
        (
            pb.WindowAggregation,
            "WINDOW_AGGREGATION_",
            window,
            ("classify", "--window-aggregation"),
            service._WINDOW_AGGREGATION,
            WindowAggregation,
        ),
        (
            pb.AggregationStrategy,
            "AGGREGATION_STRATEGY_",
            strategy,
            ("classify-tokens", "--aggregation-strategy"),
            service_tasks._STRATEGY,
            Strategy,
        ),
        (pb.Padding, "PADDING_", padding, ("tokenize", "--padding"), convert.PADDING, Padding),
    ]
    for enum, prefix, sent, (command, option), server, members in options:
        names = _proto_names(enum, prefix)
        assert {name: sent(name) for name in names} == names, prefix
        with pytest.raises(ValueError) as refused:
            sent("sideways")
        assert str(refused.value).endswith(
            "must be one of " + ", ".join(map(repr, names)) + "; got 'sideways'"
        ), prefix
        assert _cli_choices(command, option) == list(names), prefix
        assert {number: str(server[number]) for number in names.values()} == {
            number: name for name, number in names.items()
        }, prefix
        assert {str(member) for member in members} == set(names), prefix


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
