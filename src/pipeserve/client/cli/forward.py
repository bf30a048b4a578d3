"""run the model and print its outputs

Prints {"sequence_lengths", "outputs"}: each output's shape, dtype and (without --summary) its
values.
"""

import argparse
from typing import Any

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser)
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument(
        "--outputs",
        type=cli_args.comma_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="outputs to return, e.g. logits,last_hidden_state (default: the head's own)",
    )
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument(
        "--summary", action="store_true", help="print each output's shape and dtype, not values"
    )


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        output = client.forward(
            cli_args.read_texts(args),
            model=args.model,
            outputs=args.outputs or (),
            dtype=args.dtype,
            truncation=args.truncation,
            max_length=args.max_length,
        )
    described: dict[str, dict[str, Any]] = {}
    for name, array in output.items():
        described[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}
        if not args.summary:
            described[name]["values"] = array.tolist()
    cli_args.print_json(
        {"sequence_lengths": output.sequence_lengths.tolist(), "outputs": described}, args
    )
    return 0
