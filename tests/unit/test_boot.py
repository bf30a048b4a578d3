"""Start-up as the logs and LoadModel say it, in process: LoadModel's refusals name its own
fields, missing weights are said in its terms, JSON log times carry a zone, and transformers'
load report is one plain line. The servers themselves: tests/e2e/test_boot.py."""

import json
import logging
import time
from datetime import datetime

import pytest

from pipeserve.server.errors import StartupError
from pipeserve.server.logs import configure_logging
from pipeserve.server.preflight import check_model
from pipeserve.server.settings import LogFormat, Settings
from pipeserve.server.terms import Origin, Terms


def test_load_model_refusals_name_load_model_s_fields(tiny_distilbert, tmp_path):
    """Admin's LoadModel has no flags: its refusals name its own fields, and the server's
    flag where only the server can change a setting."""
    terms = Terms(Origin.LOAD_MODEL, "x")
    settings = Settings(model=(f"x={tiny_distilbert}",), task="fill-mask")
    with pytest.raises(StartupError) as refused:
        check_model(settings, terms, on_gpu=False)
    assert str(refused.value).endswith(
        "serve it as the text-classification model it is with task auto in LoadModel, or serve "
        "that head randomly initialised with a server started with --allow-missing-weights"
    )
    with pytest.raises(StartupError) as missing:
        check_model(Settings(model=(f"x={tmp_path / 'none'}",)), terms, on_gpu=False)
    assert "LoadModel x: path takes a checkpoint folder" in str(missing.value)


def test_missing_weights_are_said_in_load_model_s_terms(tiny_bert):
    from pipeserve.server.backends.torch_runner import MissingWeights, load_model
    from pipeserve.server.settings import DType, Task

    with pytest.raises(MissingWeights) as refused:
        load_model(str(tiny_bert), None, Task.TEXT_CLASSIFICATION, DType.FLOAT32, False,
                   Terms(Origin.LOAD_MODEL, "x"))  # fmt: skip
    assert str(refused.value) == (
        "BertForSequenceClassification (task text-classification in LoadModel) needs weights "
        "the checkpoint lacks: classifier.bias, classifier.weight. Load the checkpoint's own "
        "head with task auto in LoadModel, or serve them randomly initialised with a server "
        "started with --allow-missing-weights"
    )


@pytest.fixture
def root_logging():
    """The root's and the libraries' loggers as they were, after a test that configures
    logging."""
    loggers = [logging.getLogger(name) for name in ("", "transformers", "huggingface_hub")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_json_log_times_are_iso_8601_with_a_zone(capsys, root_logging):
    configure_logging("INFO", LogFormat.JSON, transformers=False)
    before = time.time()
    logging.getLogger("pipeserve").info("now")
    entry = json.loads(capsys.readouterr().err.splitlines()[-1])
    when = datetime.fromisoformat(entry["time"])
    assert when.utcoffset() is not None
    assert abs(when.timestamp() - before) < 1


def test_transformers_load_report_is_one_plain_line(capsys, root_logging):
    configure_logging("INFO", LogFormat.TEXT)
    report = (
        "\x1b[1mDistilBertForMaskedLM LOAD REPORT\x1b[0m from: /models/clf\n"
        "Key                    | Status     | \n"
        "-----------------------+------------+-\n"
        "classifier.bias        | UNEXPECTED | \n"
        "vocab_transform.weight | MISSING    | \n"
        "vocab_projector.bias   | MISSING    | \n\n"
        "Notes:\n- MISSING:\tthose params were newly initialized"
    )
    logging.getLogger("transformers.modeling_utils").warning(report)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        "transformers.modeling_utils WARNING DistilBertForMaskedLM load report from: "
        "/models/clf (unexpected: classifier.bias; missing: vocab_transform.weight, "
        "vocab_projector.bias)"
    )
