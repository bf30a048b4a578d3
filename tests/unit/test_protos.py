"""The protos as a contract: the committed stubs are what scripts/gen_protos.sh produces from
protos/ today, the package is versioned, every message field and enum value is documented, unary
RPCs are declared free of side effects, dropped fields keep their numbers and names reserved,
and the client, CLI and server take the proto enums' names. What the server sends against
them: tests/e2e/test_protos.py."""

import itertools
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers import ROOT, venv_path

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
