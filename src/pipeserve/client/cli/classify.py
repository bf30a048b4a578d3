"""classify texts

Prints per text its labels best first ({"label", "score", "index"}); with --stride, per text
{"labels": [...], "windows": count}.
"""

import argparse
from typing import Any

from pipeserve.client.cli import args as cli_args
from pipeserve.wire import WINDOW_AGGREGATIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser)
    cli_args.add_classify_arguments(parser)
    parser.add_argument(
        "--stride",
        type=int,
        metavar="N",
        help="classify a long text by windows overlapping by N tokens; each result is then "
        '{"labels": [...], "windows": count}',
    )
    parser.add_argument(
        "--window-aggregation",
        choices=list(WINDOW_AGGREGATIONS),
        help="how the windows' scores combine, with --stride (default: mean)",
    )


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        results = client.classify(
            cli_args.read_texts(args),
            model=args.model,
            function_to_apply=args.function_to_apply,
            top_k=args.top_k,
            truncation=args.truncation,
            max_length=args.max_length,
            stride=args.stride,
            window_aggregation=args.window_aggregation,
        )
    printed: list[Any] = [[label.to_dict() for label in labels] for labels in results]
    if args.stride is not None:
        printed = [
            {"labels": shown, "windows": labels.windows}
            for shown, labels in zip(printed, results, strict=True)
        ]
    cli_args.print_json(printed, args)
    return 0
