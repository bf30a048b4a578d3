"""classify texts against labels of your choice with an NLI model (zero-shot)

Prints one {"sequence", "labels", "scores"} per text, labels best first, as transformers'
zero-shot-classification pipeline returns them.
"""

import argparse

from pipeserve.client.cli import args as cli_args

# The RPC's name: the module's stem is the task's, as on the server.
NAME = "classify-zero-shot"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser, "the texts to classify", pairs=False)
    parser.add_argument(
        "--labels",
        type=cli_args.comma_list,
        action="extend",
        required=True,
        metavar="LABEL[,LABEL...]",
        help="the candidate labels",
    )
    parser.add_argument(
        "--hypothesis-template",
        metavar="TEMPLATE",
        help='hypothesis with {} for the label (default: "This example is {}.")',
    )
    parser.add_argument("--multi-label", action="store_true", help="score each label on its own")
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)


def run(args: argparse.Namespace) -> int:
    texts = cli_args.read_texts(args)
    with cli_args.connect(args) as client:
        results = client.classify_zero_shot(
            texts,  # type: ignore[arg-type]
            args.labels,
            hypothesis_template=args.hypothesis_template,
            multi_label=args.multi_label,
            truncation=args.truncation,
            max_length=args.max_length,
            model=args.model,
        )
    cli_args.print_json(
        [
            {
                "sequence": text,
                "labels": [s.label for s in labels],
                "scores": [s.score for s in labels],
            }
            for text, labels in zip(texts, results, strict=True)
        ],
        args,
    )
    return 0
