"""What tests of both layers use in this process: the machine and the checkout (paths, the
SST-2 corpus, tools, the README's blocks, the manifests built), the in-process reference a
server's answers must equal, and the load tester and tracing as a caller drives them."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2_DEV = SHARED / "data" / "sst2" / "dev.tsv"
SEED_SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
]


def require(present: bool, reason: str) -> None:
    """Skips the test when something it needs is missing, and `-rs` (pyproject) names why in
    the summary; in CI (CI=true), where .ci/run provides all of it, fails the run instead, so
    that no test goes quietly missing there."""
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(reason)


def require_sst2_dev() -> Path:
    require(SST2_DEV.exists(), f"{SST2_DEV} not found")
    return SST2_DEV


def venv_path() -> str:
    """PATH with this interpreter's folder first: the venv's tools (hadolint, python) are found
    whether or not the venv is activated."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def require_tool(name: str) -> str:
    found = shutil.which(name, path=venv_path())
    require(found is not None, f"{name} not installed")
    assert found is not None
    return found


def kustomized(overlay: str) -> list[dict]:
    """The documents that `kubectl kustomize deploy/OVERLAY` builds."""
    import yaml

    built = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(ROOT / "deploy" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(built) if doc]


def assert_classified_alike(after: list, before: list) -> None:
    """Classify answers as rows of (label, score): the same labels in the same order, and the
    same scores within 1e-5."""
    assert [[label for label, _ in row] for row in after] == [
        [label for label, _ in row] for row in before
    ]
    for row, was in zip(after, before, strict=True):
        assert [s for _, s in row] == pytest.approx([s for _, s in was], abs=1e-5)


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language`, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", readme, re.S)


def loadtest_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`pipeserve loadtest ARGS` run in this process: its exit status, stdout and stderr."""
    from pipeserve.client.cli import main

    status = main.main(["loadtest", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def caller_spans(count: int) -> list:
    """OpenTelemetry spans standing for `count` callers, each the root of its own trace."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("caller")
    return [tracer.start_span(f"caller {i}") for i in range(count)]


def traceparent(span) -> str:
    """The W3C traceparent header that makes `span` a call's parent."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


def sst2_sentences(limit: int | None = None) -> list[str]:
    """SST-2 dev sentences, trailing space stripped (see shared/data/sst2/SOURCE.md)."""
    lines = require_sst2_dev().read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0].strip() for line in lines][:limit]


def in_process(path, head, sentences: list[str], *outputs: str) -> list[list[np.ndarray]]:
    """Each sentence alone (a batch of one: no padding) through the transformers model `head`
    loads from `path`, in eval mode without autograd: the reference a server's answers must
    equal. For each of `outputs` (the model's outputs by name) a list of one array per sentence; a
    model with a head gives its last hidden layer as `last_hidden_state`."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = head.from_pretrained(path).eval()
    rows: list[list[np.ndarray]] = [[] for _ in outputs]
    with torch.inference_mode():
        for sentence in sentences:
            encoded = tokenizer(sentence, truncation=True, return_tensors="pt")
            out = model(**encoded, output_hidden_states=True)
            for name, row in zip(outputs, rows, strict=True):
                last_layer = name == "last_hidden_state" and name not in out
                row.append((out.hidden_states[-1] if last_layer else out[name])[0].numpy())
    return rows
