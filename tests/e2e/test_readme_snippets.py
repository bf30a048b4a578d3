"""Every Python example of the README that uses pipeserve's client runs as pasted, each
example's calls going to the model its comment names: the real MiniLM of the shared
minilm_server for the examples that name it, a tiny model of the shared every_task server for
the rest. Only the Admin example is left out: it loads a model from the hub, which the tests
cannot reach. (The Open Inference Protocol example, with Triton's client, is
test_open_inference's.)"""

import contextlib
import io
import re

import pytest

import pipeserve.client
from pipeserve.client import Client
from tests.helpers import ROOT, readme_blocks

README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = [snippet for snippet in readme_blocks("python") if "pipeserve.client" in snippet]

# The model each example's comment names, by a phrase of it; the rest call the default model
# (every_task's, the tiny sentiment classifier).
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


# The multi-model example's server names its models after real checkpoints; every_task serves
# tiny ones of the same tasks under these names.
SERVED_AS = {"sentiment": "clf", "minilm": "enc"}


def routed(address: str, model: str) -> type[Client]:
    """Client at `address` whose calls naming no model go to `model` (empty: the default),
    as if the example's server served that model alone, and whose calls naming one of
    SERVED_AS go to the model served under that name."""

    class Routed(Client):
        def __init__(self, target: object, **kwargs: object) -> None:
            super().__init__(address, **kwargs)  # type: ignore[arg-type]
            fanout = self._fanout

            def call(call):
                fields = call.request.DESCRIPTOR.fields_by_name
                if "model" in fields:
                    named = call.request.model or model
                    call.request.model = SERVED_AS.get(named, named)
                return fanout(call)

            self._fanout = call

    return Routed


@pytest.mark.slow
@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if "AdminClient" not in s],
    ids=lambda snippet: f"{README.index(snippet)}:{model_of(snippet) or 'default'}",
)
def test_each_python_example_runs_as_pasted(every_task, minilm_server, snippet, monkeypatch):
    model = model_of(snippet)
    if model == "minilm":  # the default, and only, model of minilm_server
        address, model = minilm_server.address, ""
    else:
        address = every_task.address
    monkeypatch.setattr(pipeserve.client, "Client", routed(address, model))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(snippet, {})

    if "stride=64" in snippet:  # the figure the comment gives is the one printed
        said = re.search(r"# e\.g\. (\d+) ", snippet)
        assert said is not None
        assert printed.getvalue().split()[0] == said.group(1)
