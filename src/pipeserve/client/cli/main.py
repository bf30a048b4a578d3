"""The `pipeserve` command: `serve` runs the server, the other subcommands call one.

Client subcommands print one JSON document on stdout. Exit status: 0 on success, 1 when the
server refuses the call (stderr says `error: CODE: details`), 2 for bad usage.

Adding a subcommand: write a module whose docstring's first line is its help and which defines
`add_arguments(parser)` and `run(args) -> int`, then list it in MODULE_SUBCOMMANDS. Every client
subcommand gets --target, the TLS and token arguments, --timeout and --indent; `cli_args.py`
has `connect(args)` (a Client), `endpoint(args)` (the channel factory), `print_json(...)` and
the shared argument groups for it to use. Keep heavy imports inside `run`: every module is
imported to build the parser.
"""

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from typing import Any

from pipeserve.client.cli.args import (
    UsageError,
    add_classify_arguments,
    add_common_arguments,
    add_length_arguments,
    add_model_argument,
    add_text_arguments,
    comma_list,
    connect,
    print_json,
    read_texts,
)
from pipeserve.client.errors import PipeserveError
from pipeserve.wire import PADDINGS, WINDOW_AGGREGATIONS

# Subcommands that live in their own module: name -> module path.
MODULE_SUBCOMMANDS: dict[str, str] = {
    "health": "pipeserve.client.cli.health",
    "stream": "pipeserve.client.cli.stream",
    "loadtest": "pipeserve.loadtest.command",
    "classify-tokens": "pipeserve.client.cli.classify_tokens",
    "fill-mask": "pipeserve.client.cli.fill_mask",
    "embed": "pipeserve.client.cli.embed",
    "rerank": "pipeserve.client.cli.rerank",
    "classify-zero-shot": "pipeserve.client.cli.zero_shot",
    "admin": "pipeserve.client.cli.admin",
}


@dataclass(frozen=True)
class Subcommand:
    """A client subcommand: its help line, its own arguments and what it does."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    @classmethod
    def from_module(cls, name: str, module_path: str) -> "Subcommand":
        """The subcommand a module defines (see the module docstring)."""
        module = import_module(module_path)
        summary = (module.__doc__ or "").strip().splitlines()
        return cls(name, summary[0] if summary else "", module.add_arguments, module.run)


# --- Built-in subcommands ---------------------------------------------------------------------


def _tokenize_arguments(parser: argparse.ArgumentParser) -> None:
    add_text_arguments(parser)
    add_model_argument(parser)
    add_length_arguments(parser)
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


def _tokenize(args: argparse.Namespace) -> int:
    with connect(args) as client:
        encodings = client.tokenize(
            read_texts(args),
            model=args.model,
            padding=args.padding,
            truncation=args.truncation,
            max_length=args.max_length,
            return_attention_mask=args.return_attention_mask,
            return_token_type_ids=args.return_token_type_ids,
            return_tokens=args.return_tokens,
            return_offsets=args.return_offsets,
        )
    print_json([encoding.to_dict() for encoding in encodings], args)
    return 0


def _forward_arguments(parser: argparse.ArgumentParser) -> None:
    add_text_arguments(parser)
    add_model_argument(parser)
    add_length_arguments(parser)
    parser.add_argument(
        "--outputs",
        type=comma_list,
        action="extend",
        metavar="NAME[,NAME...]",
        help="outputs to return, e.g. logits,last_hidden_state (default: the head's own)",
    )
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument(
        "--summary", action="store_true", help="print each output's shape and dtype, not values"
    )


def _forward(args: argparse.Namespace) -> int:
    with connect(args) as client:
        output = client.forward(
            read_texts(args),
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
    print_json({"sequence_lengths": output.sequence_lengths.tolist(), "outputs": described}, args)
    return 0


def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    add_text_arguments(parser)
    add_classify_arguments(parser)
    parser.add_argument(
        "--stride",
        type=int,
        metavar="N",
        help="classify a long text by windows overlapping by N tokens; each result is then "
        '{"labels": [...], "windows": count}',
    )
    parser.add_argument(
        "--window-aggregation",
        choices=list(WINDOW_AGGREGATIONS),
        help="how the windows' scores combine, with --stride (default: mean)",
    )


def _classify(args: argparse.Namespace) -> int:
    with connect(args) as client:
        results = client.classify(
            read_texts(args),
            model=args.model,
            function_to_apply=args.function_to_apply,
            top_k=args.top_k,
            truncation=args.truncation,
            max_length=args.max_length,
            stride=args.stride,
            window_aggregation=args.window_aggregation,
        )
    printed: list[Any] = [[label.to_dict() for label in labels] for labels in results]
    if args.stride is not None:
        printed = [
            {"labels": shown, "windows": labels.windows}
            for shown, labels in zip(printed, results, strict=True)
        ]
    print_json(printed, args)
    return 0


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)


def _info(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.model_info(model=args.model)
    print_json(dataclasses.asdict(info), args)
    return 0


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _models(args: argparse.Namespace) -> int:
    with connect(args) as client:
        models = client.list_models()
    print_json([dataclasses.asdict(m) for m in models], args)
    return 0


def subcommands() -> list[Subcommand]:
    """The client subcommands, built-in first."""
    return [
        Subcommand("tokenize", "tokenize texts", _tokenize_arguments, _tokenize),
        Subcommand("forward", "run the model and print its outputs", _forward_arguments, _forward),
        Subcommand("classify", "classify texts", _classify_arguments, _classify),
        Subcommand("info", "describe a served model", _info_arguments, _info),
        Subcommand("models", "list the served models", _models_arguments, _models),
        *(Subcommand.from_module(name, path) for name, path in MODULE_SUBCOMMANDS.items()),
    ]


# --- Entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand but `serve`, which parses its own arguments."""
    parser = argparse.ArgumentParser(prog="pipeserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pipeserve {version('pipeserve')}")
    commands = parser.add_subparsers(title="subcommands", metavar="COMMAND", required=True)
    # Listed for --help only: main() hands `serve` over before this parser sees it.
    commands.add_parser(
        "serve", help="run the server (needs pipeserve[server]; see `pipeserve serve --help`)"
    )
    for command in subcommands():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        add_common_arguments(sub)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def _serve(argv: list[str]) -> int:
    try:
        server = import_module("pipeserve.server.__main__")
    except ImportError as error:
        print(
            f"error: `pipeserve serve` needs the server extra: pip install 'pipeserve[server]' "
            f"({error})",
            file=sys.stderr,
        )
        return 2
    return int(server.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `pipeserve` command with `argv` (default: sys.argv[1:]); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Before any parsing, so that the server's flags (and its --help) reach the server untouched.
    if arguments[:1] == ["serve"]:
        return _serve(arguments[1:])
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exit_:
        # argparse exits on --help and on bad usage; a caller of main() wants the status.
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    try:
        return int(args.run(args))
    except PipeserveError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (UsageError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
