"""`pipeserve loadtest`'s per-RPC inputs in process: fill-mask texts get the mask token they
lack, the progress line counts what the report counts, and texts from a file are refused in the
user's terms (a column the rows do not have, a file of blank lines, a line that is not UTF-8).
Against the shared server of a model per task: tests/e2e/test_loadtest_rpcs.py."""

import asyncio
import io

import pytest

from pipeserve.client.cli import args as cli_args
from pipeserve.loadtest import Outcome, Sample
from pipeserve.loadtest.progress import Progress
from pipeserve.loadtest.texts import read_texts, with_mask


def test_fill_mask_texts_get_the_mask_token_they_lack():
    assert with_mask(["Paris is nice.", "a [MASK] b"], "[MASK]") == [
        "Paris is [MASK]",
        "a [MASK] b",
    ]


def _sample(index: int, warmup: bool, code: str = "OK") -> Sample:
    return Sample(index, float(index), float(index), index + 0.5, warmup, Outcome(code, 1))


def test_the_progress_line_counts_what_the_report_counts():
    async def lines() -> list[str]:
        samples = [_sample(0, True), _sample(1, True), _sample(2, True, "UNAVAILABLE")]
        stream = io.StringIO()
        progress = Progress(samples, stream)
        progress.write()
        samples += [_sample(3, False), _sample(4, False, "INTERNAL")]
        progress.write(final=True)
        return stream.getvalue().splitlines()

    during, final = asyncio.run(lines())
    assert ": 0 requests (+3 warmup, not counted), 0 errors" in during
    assert ": 2 requests (+3 warmup, not counted), 1 errors" in final


def test_a_column_beyond_the_rows_says_so(tmp_path):
    table = tmp_path / "table.tsv"
    table.write_text("sentence\tlabel\nhello there\t1\n", "utf-8")
    with pytest.raises(cli_args.UsageError, match=r"column 7 is beyond the rows of .*at most 2"):
        read_texts(str(table), "7")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", "utf-8")
    with pytest.raises(cli_args.UsageError, match="every line is blank"):
        read_texts(str(blank))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok\nna\xefve\n".encode("latin-1"))
    with pytest.raises(cli_args.UsageError, match=r"latin1\.txt line 2 is not UTF-8"):
        read_texts(str(latin1))
