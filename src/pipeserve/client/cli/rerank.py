"""rerank documents against a query with a cross-encoder (as CrossEncoder.rank)

Prints the documents best first: [{"corpus_id", "score"}, ...], with "text" when
--return-documents is given.
"""

import argparse

from pipeserve.client.cli import args as cli_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="the query")
    parser.add_argument("documents", nargs="*", metavar="DOCUMENT", help="the documents")
    parser.add_argument(
        "--file", metavar="PATH", help="read documents from PATH, one per line ('-': stdin)"
    )
    cli_args.add_model_argument(parser)
    cli_args.add_length_arguments(parser)
    parser.add_argument("--top-n", type=int, metavar="N", help="return the N best (default: all)")
    parser.add_argument(
        "--return-documents", action="store_true", help="include each document's text"
    )
    parser.add_argument(
        "--raw-scores", action="store_true", help="raw logits instead of the model's activation"
    )


def run(args: argparse.Namespace) -> int:
    # The documents are read as `read_texts` reads texts.
    args.texts = args.documents
    with cli_args.connect(args) as client:
        ranked = client.rerank(
            args.query,
            cli_args.read_texts(args),  # type: ignore[arg-type]
            top_n=args.top_n,
            return_documents=args.return_documents,
            raw_scores=args.raw_scores,
            truncation=args.truncation,
            max_length=args.max_length,
            model=args.model,
        )
    cli_args.print_json([document.to_dict() for document in ranked], args)
    return 0
