"""The README's examples, as a new user runs them: the offline "Calling it" example against the
bundled MiniLM encoder, and the grpcurl requests, which must be valid JSON for their RPCs."""

import contextlib
import io
import re
import shlex
from pathlib import Path

from google.protobuf import json_format

from pipeserve.v1 import pipeserve_pb2 as pb

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_the_offline_calling_example_runs_as_written(minilm_server):
    offline = next(block for block in _blocks("python") if "an encoder" in block)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(offline.replace("localhost:50051", minilm_server.address), {})

    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("(2, ") and ", 384) (2, 384) [" in lines[0]
    assert lines[1] == "feature-extraction"


def test_the_grpcurl_requests_are_valid_for_their_rpcs():
    commands = [
        shlex.split(line)
        for block in _blocks("bash")
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("grpcurl") and " -d " in line and "pipeserve.v1." in line
    ]
    assert len(commands) == 2
    for words in commands:
        payload = words[words.index("-d") + 1]
        method = words[-1].rsplit("/", 1)[1]
        request_type = getattr(pb, f"{method}Request")
        json_format.Parse(payload, request_type())  # raises on an unknown field or bad value
