"""describe a served model

Prints ModelInfo (the model, the server's limits and its workers) as JSON.
"""

import argparse
import dataclasses

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_model_argument(parser)


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        info = client.model_info(model=args.model)
    cli_args.print_json(dataclasses.asdict(info), args)
    return 0
