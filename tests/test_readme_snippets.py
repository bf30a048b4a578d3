"""Every Python example of the README that uses pipeserve's client runs as pasted, against one
server that serves a model of each kind an example needs (tiny ones, under the names the
multi-model example calls), each example's calls going to the model its comment names. Only the
Admin example is left out: it loads a model from the hub, which the tests cannot reach. (The
Open Inference Protocol example, with Triton's client, is test_open_inference's.)"""

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeserve.client
from pipeserve.client import Client
from tests.conftest import ServerProcess, launch_server, model_flags

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
SNIPPETS = [
    snippet
    for snippet in re.findall(r"```python\n(.*?)```", README, re.S)
    if "pipeserve.client" in snippet
]

# The model each example's comment names, by a phrase of it; the rest call the default model.
MODEL_OF = {
    "an encoder: tokenize": "minilm",
    "dslim/bert-base-NER\n": "ner",
    "--model bert-base-uncased": "mlm",
    "the bundled MiniLM encoder": "minilm",
    "a cross-encoder": "ce",
    "an NLI model": "nli",
}


def model_of(snippet: str) -> str:
    named = [model for phrase, model in MODEL_OF.items() if phrase in snippet]
    assert len(named) <= 1, snippet
    return named[0] if named else ""


@pytest.fixture(scope="module")
def served(tiny_distilbert, minilm_path, task_models) -> Iterator[ServerProcess]:
    """The default (first) model is the sentiment classifier, as `pipeserve serve`'s is."""
    models = {"sentiment": tiny_distilbert, "minilm": minilm_path}
    models.update((name, task_models[name]) for name in ("ner", "mlm", "ce", "nli"))
    # Six workers starting at once: on a busy machine that takes minutes.
    process = launch_server(None, *model_flags(models), timeout=600)
    yield process
    process.stop()


def routed(address: str, model: str) -> type[Client]:
    """Client at `address` whose calls naming no model go to `model` (empty: the default),
    as if the example's server served that model alone."""

    class Routed(Client):
        def __init__(self, target: object, **kwargs: object) -> None:
            super().__init__(address, **kwargs)  # type: ignore[arg-type]
            fanout = self._fanout

            def call(call):
                fields = call.request.DESCRIPTOR.fields_by_name
                if model and "model" in fields and not call.request.model:
                    call.request.model = model
                return fanout(call)

            self._fanout = call

    return Routed


@pytest.mark.slow
@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if "AdminClient" not in s],
    ids=lambda snippet: f"{README.index(snippet)}:{model_of(snippet) or 'default'}",
)
def test_each_python_example_runs_as_pasted(served, snippet, monkeypatch):
    monkeypatch.setattr(pipeserve.client, "Client", routed(served.address, model_of(snippet)))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})

    if "stride=64" in snippet:  # the figure the comment gives is the one printed
        said = re.search(r"# e\.g\. (\d+) ", snippet)
        assert said is not None
        assert printed.getvalue().split()[0] == said.group(1)
