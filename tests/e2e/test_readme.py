"""The README's offline "Calling it" example, run as written against the bundled MiniLM
encoder."""

import contextlib
import io

from tests.helpers import readme_blocks


def test_the_offline_calling_example_runs_as_written(minilm_server):
    offline = next(block for block in readme_blocks("python") if "an encoder" in block)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(offline.replace("localhost:50051", minilm_server.address), {})

    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("(2, ") and ", 384) (2, 384) [" in lines[0]
    assert lines[1] == "feature-extraction"
