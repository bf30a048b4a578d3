"""label each token of texts (NER, POS) with a token-classification model

Prints per text a list of the token-classification pipeline's dicts: entity_group, score, word,
start and end (entity and index instead of entity_group with --aggregation-strategy none).
"""

import argparse

from pipeserve.client.cli import args as cli_args
from pipeserve.wire import AGGREGATION_STRATEGIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser, "the texts to label", pairs=False)
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument(
        "--aggregation-strategy",
        choices=list(AGGREGATION_STRATEGIES),
        default="none",
        help="how tokens become entities (default: none, one result per token)",
    )
    parser.add_argument(
        "--ignore-labels",
        type=cli_args.comma_list,
        metavar="LABEL[,LABEL...]",
        help="labels left out (default: O); '' leaves none out",
    )
    parser.add_argument(
        "--stride",
        type=int,
        metavar="N",
        help="label a long text whole, by windows overlapping by N tokens",
    )


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        results = client.classify_tokens(
            cli_args.read_texts(args),  # type: ignore[arg-type]
            model=args.model,
            aggregation_strategy=args.aggregation_strategy,
            ignore_labels=args.ignore_labels,
            stride=args.stride,
            truncation=args.truncation,
            max_length=args.max_length,
        )
    cli_args.print_json([[entity.to_dict() for entity in entities] for entities in results], args)
    return 0
