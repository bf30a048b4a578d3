"""tokenize texts

Prints one encoding per text (input_ids, and the attention mask, token type ids, tokens and
offsets asked for), in order.
"""

import argparse

from pipeserve.client.cli import args as cli_args
from pipeserve.wire import PADDINGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser)
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument("--padding", choices=list(PADDINGS), default="longest")
    parser.add_argument(
        "--return-attention-mask", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument(
        "--return-token-type-ids",
        action=argparse.BooleanOptionalAction,
        help="(default: when the model takes them)",
    )
    parser.add_argument("--return-tokens", action="store_true", help="include the token strings")
    parser.add_argument("--return-offsets", action="store_true", help="include character offsets")


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        encodings = client.tokenize(
            cli_args.read_texts(args),
            model=args.model,
            padding=args.padding,
            truncation=args.truncation,
            max_length=args.max_length,
            return_attention_mask=args.return_attention_mask,
            return_token_type_ids=args.return_token_type_ids,
            return_tokens=args.return_tokens,
            return_offsets=args.return_offsets,
        )
    cli_args.print_json([encoding.to_dict() for encoding in encodings], args)
    return 0
