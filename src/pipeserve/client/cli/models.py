"""list the served models

Prints each served model's name, model, task, whether it is serving and whether it is the
default.
"""

import argparse
import dataclasses

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No arguments of its own: the server's models are listed whole."""


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        models = client.list_models()
    cli_args.print_json([dataclasses.asdict(m) for m in models], args)
    return 0
