"""The `pipeserve` command: `serve` runs the server, the other subcommands call one.

Client subcommands print one JSON document on stdout. Exit status: 0 on success, 1 when the
server refuses the call (stderr says `error: CODE: details`), 2 for bad usage.

Adding a subcommand: write a module of this package whose docstring's first line is its help
and which defines `add_arguments(parser)` and `run(args) -> int`; it is found by its `run`, and
named by its stem with dashes (or its NAME, where they differ). Every client
subcommand gets --target, the TLS and token arguments, --timeout and --indent; `args.py`
has `connect(args)` (a Client), `endpoint(args)` (the channel factory), `print_json(...)` and
the shared argument groups for it to use. Keep heavy imports inside `run`: every module is
imported to build the parser.
"""

import argparse
import pkgutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import version
from types import ModuleType

from pipeserve.client.cli.args import UsageError, add_common_arguments
from pipeserve.client.errors import PipeserveError

# The subcommands defined outside this package: name -> module path.
ELSEWHERE: dict[str, str] = {"loadtest": "pipeserve.loadtest.command"}


@dataclass(frozen=True)
class Subcommand:
    """A client subcommand: its help line, its own arguments and what it does."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    @classmethod
    def from_module(cls, name: str, module: ModuleType) -> "Subcommand":
        """The subcommand a module defines (see the module docstring)."""
        summary = (module.__doc__ or "").strip().splitlines()
        return cls(name, summary[0] if summary else "", module.add_arguments, module.run)


def subcommands() -> list[Subcommand]:
    """The client subcommands, by name: every module of this package that defines `run`, and
    those ELSEWHERE."""
    found = dict(ELSEWHERE)
    for module in pkgutil.iter_modules(import_module(__package__).__path__):
        if not module.name.startswith("_"):  # __main__ runs the command when imported
            found[module.name.replace("_", "-")] = f"{__package__}.{module.name}"
    modules = {name: import_module(path) for name, path in found.items()}
    return sorted(
        (
            Subcommand.from_module(getattr(module, "NAME", name), module)
            for name, module in modules.items()
            if hasattr(module, "run")
        ),
        key=lambda command: command.name,
    )


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
