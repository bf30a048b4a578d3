"""embed texts into sentence embeddings (as SentenceTransformer.encode)

Prints {"shape", "dtype", "embeddings"}: one row per text, in order.
"""

import argparse

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_text_arguments(parser, "the texts to embed", pairs=False)
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument(
        "--normalize", action="store_true", help="L2-normalise each embedding (after truncation)"
    )
    parser.add_argument(
        "--truncate-dim", type=int, metavar="N", help="keep the first N dimensions (Matryoshka)"
    )
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="text put before every input")
    prompt.add_argument("--prompt-name", help="one of the checkpoint's prompts (see `info`)")
    parser.add_argument(
        "--summary", action="store_true", help="print the shape and dtype, not the values"
    )


def run(args: argparse.Namespace) -> int:
    with cli_args.connect(args) as client:
        embeddings = client.embed(
            cli_args.read_texts(args),  # type: ignore[arg-type]
            normalize=args.normalize,
            truncate_dim=args.truncate_dim,
            dtype=args.dtype,
            prompt=args.prompt,
            prompt_name=args.prompt_name,
            truncation=args.truncation,
            max_length=args.max_length,
            model=args.model,
        )
    described = {"shape": list(embeddings.shape), "dtype": str(embeddings.dtype)}
    if not args.summary:
        described["embeddings"] = embeddings.tolist()
    cli_args.print_json(described, args)
    return 0
