"""fill in the mask tokens of texts with a masked language model

Prints per text the fill-mask pipeline's candidates (score, token, token_str, sequence): a list
for a text with one mask, a list per mask for a text with several, as the pipeline does.
"""

import argparse

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser, "the texts, each with a mask token ([MASK])", pairs=False)
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument(
        "--top-k", type=int, default=5, metavar="K", help="candidates per mask (default: 5)"
    )
    parser.add_argument(
        "--targets",
        type=cli_args.comma_list,
        metavar="TOKEN[,TOKEN...]",
        help="only these tokens are candidates",
    )


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        results = client.fill_mask(
            cli_args.read_texts(args),  # type: ignore[arg-type]
            model=args.model,
            top_k=args.top_k,
            targets=args.targets,
            truncation=args.truncation,
            max_length=args.max_length,
        )
    printed = []
    for masks in results:
        per_mask = [[c.to_dict() for c in mask.candidates] for mask in masks]
        printed.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    cli_args.print_json(printed, args)
    return 0
