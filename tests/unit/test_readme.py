"""The README's grpcurl requests are valid JSON for their RPCs. Its examples run as a new user
runs them: tests/e2e/test_readme.py and tests/e2e/test_readme_snippets.py."""

import shlex

from google.protobuf import json_format

from pipeserve.v1 import pipeserve_pb2 as pb
from tests.helpers import readme_blocks


def test_the_grpcurl_requests_are_valid_for_their_rpcs():
    commands = [
        shlex.split(line)
        for block in readme_blocks("bash")
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("grpcurl") and " -d " in line and "pipeserve.v1." in line
    ]
    assert len(commands) == 2
    for words in commands:
        payload = words[words.index("-d") + 1]
        method = words[-1].rsplit("/", 1)[1]
        request_type = getattr(pb, f"{method}Request")
        json_format.Parse(payload, request_type())  # raises on an unknown field or bad value
