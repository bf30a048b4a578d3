"""What every client subcommand shares: --target, the TLS and token arguments, --timeout and
--indent, the channel they make (`endpoint`, `connect`), texts from arguments or a file, the
model and length arguments, and JSON on stdout. `main.py` builds the command from these; each
subcommand module uses them.
"""

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from pipeserve.client.build import TextLike
from pipeserve.client.channel import Endpoint
from pipeserve.client.client import Client
from pipeserve.client.security import read_token, tls_credentials
from pipeserve.wire import SCORE_FUNCTIONS

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_ENV = "PIPESERVE_TARGET"
TOKEN_ENV = "PIPESERVE_TOKEN"


class UsageError(Exception):
    """Arguments that parse but make no sense together; exit status 2."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--target, TLS, token, --timeout and --indent, which every client subcommand takes."""
    parser.add_argument(
        "--target",
        default=os.environ.get(TARGET_ENV, DEFAULT_TARGET),
        help=f"server address (default: ${TARGET_ENV} or {DEFAULT_TARGET})",
    )
    tls = parser.add_argument_group("TLS and tokens (a server with --tls-cert, --auth-token-file)")
    tls.add_argument(
        "--tls", action="store_true", help="use TLS, trusting the system's CAs (implied below)"
    )
    tls.add_argument("--tls-ca", metavar="PEM", help="CA of the server's certificate")
    tls.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    tls.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    token = tls.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token sent with every call (default: ${TOKEN_ENV})",
    )
    token.add_argument(
        "--token-file", metavar="PATH", help="read the bearer token from PATH (its first line)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="deadline of each call (default: none)"
    )
    parser.add_argument(
        "--indent", type=int, metavar="N", help="pretty-print the JSON (default: one line)"
    )


def security(args: argparse.Namespace) -> dict[str, Any]:
    """`credentials` and `token` as Client, Endpoint and load_test take them, from the TLS and
    token arguments of add_common_arguments."""
    credentials = None
    if args.tls or args.tls_ca or args.tls_cert or args.tls_key:
        credentials = tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    token = read_token(args.token_file) if args.token_file is not None else args.token
    return {"credentials": credentials, "token": token}


def endpoint(args: argparse.Namespace) -> Endpoint:
    """The Endpoint (channel factory) for the subcommand's --target, TLS and token."""
    return Endpoint(args.target, **security(args))


def connect(args: argparse.Namespace) -> Client:
    """A Client for the subcommand's --target, TLS, token and --timeout."""
    return Client(args.target, timeout=args.timeout, **security(args))


def print_json(value: Any, args: argparse.Namespace) -> None:
    """Writes `value` as JSON on stdout, indented as --indent says."""
    json.dump(value, sys.stdout, indent=args.indent, ensure_ascii=False)
    sys.stdout.write("\n")


def add_text_arguments(
    parser: argparse.ArgumentParser, texts: str = "the texts to send", pairs: bool = True
) -> None:
    """Texts as arguments (`texts` says what they are) or from --file, and --pairs where the
    RPC takes pairs."""
    parser.add_argument("texts", nargs="*", metavar="TEXT", help=texts)
    parser.add_argument(
        "--file", metavar="PATH", help="read texts from PATH, one per line ('-': stdin)"
    )
    if pairs:
        parser.add_argument(
            "--pairs", action="store_true", help="take the texts two by two as (text, text_pair)"
        )


def file_lines(path: str) -> Iterator[str]:
    """The lines of the file at `path` ('-': stdin), without their line ends, read lazily.
    A line that is not UTF-8 raises UsageError naming the file, the line and the byte."""
    name = "stdin" if path == "-" else path
    with contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise UsageError(
                    f"{name} line {number} is not UTF-8 (byte 0x{line[error.start]:02x} at "
                    f"column {error.start + 1}); convert it, e.g. with iconv -f latin1 -t utf-8"
                ) from None
            yield text.removesuffix("\n").removesuffix("\r")


def read_texts(args: argparse.Namespace) -> list[TextLike]:
    """The texts of add_text_arguments: arguments first, then the file's lines."""
    texts: list[str] = list(args.texts)
    if args.file is not None:
        texts += file_lines(args.file)
    if not texts:
        raise UsageError("no texts: give them as arguments or with --file")
    if not getattr(args, "pairs", False):
        return list(texts)
    if len(texts) % 2:
        raise UsageError(f"--pairs needs an even number of texts, got {len(texts)}")
    return list(zip(texts[::2], texts[1::2], strict=True))


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """--model: which served model the call goes to (`pipeserve models` lists them)."""
    parser.add_argument(
        "--model",
        default="",
        metavar="NAME",
        help="served model to call (default: the server's default model)",
    )


def add_length_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-length and --truncation/--no-truncation."""
    parser.add_argument(
        "--max-length", type=int, metavar="N", help="token limit (default: the model's)"
    )
    parser.add_argument(
        "--truncation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cut texts longer than the limit; without it they are refused (default: cut)",
    )


def comma_list(value: str) -> list[str]:
    """An argparse type: "a, b,c" -> ["a", "b", "c"]."""
    return [name.strip() for name in value.split(",") if name.strip()]


def top_k_or_all(value: str) -> int | None:
    if value == "all":
        return None
    try:
        top_k = int(value)
    except ValueError:
        top_k = 0
    if top_k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'all', got {value!r}")
    return top_k


def add_classify_arguments(parser: argparse.ArgumentParser) -> None:
    """--top-k, --function-to-apply, --model and the length arguments, as Classify takes
    them."""
    add_model_argument(parser)
    add_length_arguments(parser)
    parser.add_argument(
        "--top-k",
        type=top_k_or_all,
        default=1,
        metavar="K|all",
        help="labels per text (default: 1)",
    )
    parser.add_argument(
        "--function-to-apply",
        choices=list(SCORE_FUNCTIONS),
        help="score function (default: from the model config)",
    )
