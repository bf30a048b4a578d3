"""The committed stubs are what scripts/gen_protos.sh produces from protos/ today."""

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import venv_path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("pipeserve_pb2.py", "pipeserve_pb2.pyi", "pipeserve_pb2_grpc.py")


def test_generated_stubs_are_up_to_date(tmp_path):
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    for name in GENERATED:
        (tmp_path / "protos/pipeserve/v1" / name).unlink()
    # The script runs `python` from PATH: this interpreter's, activated or not.
    env = {**os.environ, "PATH": venv_path()}
    subprocess.run(["bash", str(tmp_path / "scripts/gen_protos.sh")], check=True, env=env)
    for name in GENERATED:
        fresh = (tmp_path / "protos/pipeserve/v1" / name).read_text()
        committed = (ROOT / "protos/pipeserve/v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen_protos.sh"


def test_proto_package_is_versioned():
    from pipeserve.v1 import pipeserve_pb2

    assert pipeserve_pb2.DESCRIPTOR.package == "pipeserve.v1"
    assert set(pipeserve_pb2.DESCRIPTOR.services_by_name["Inference"].methods_by_name) == {
        "Tokenize",
        "Forward",
        "Classify",
        "ClassifyStream",
        "ModelInfo",
    }


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
