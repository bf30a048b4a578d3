"""classify lines from stdin over one ClassifyStream call, a JSON line per result as it arrives

Each non-blank line of the input is one request, whose id is its line number (from 1). Results
arrive as the server finishes them, which need not be the input's order: match them by id.
A line the server refuses gets an `error` line and the stream goes on; the exit status is then 1.
"""

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from pipeserve.client.cli import args as cli_args
from pipeserve.client.results import StreamResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file", default="-", metavar="PATH", help="read the lines from PATH (default: stdin)"
    )
    cli_args.add_classify_arguments(parser)


def requests(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """(id, [text]) per non-blank line, lazily: a request goes out as soon as its line is read."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield str(number), [text]


def result_line(result: StreamResult) -> dict[str, Any]:
    """One output line: the id and its labels, or the id and the error."""
    if result.error is not None:
        return {
            "id": result.id,
            "error": {"code": result.error.code.name, "details": result.error.details},
        }
    assert result.results is not None
    return {"id": result.id, "labels": [label.to_dict() for label in result.results[0]]}


def run(args: argparse.Namespace) -> int:
    refused = answered = 0
    with cli_args.connect(args) as client:
        results = client.classify_stream(
            requests(cli_args.file_lines(args.file)),
            model=args.model,
            function_to_apply=args.function_to_apply,
            top_k=args.top_k,
            truncation=args.truncation,
            max_length=args.max_length,
        )
        for result in results:
            answered += 1
            refused += result.error is not None
            # One line each, flushed, so that a pipe sees every result when it arrives.
            print(json.dumps(result_line(result), ensure_ascii=False), flush=True)
    if refused:
        print(f"error: {refused} of {answered} requests refused", file=sys.stderr)
    return 1 if refused else 0
