"""load or unload a model while the server serves (a server with --admin-token-file)

    pipeserve admin load NAME PATH [--task T --devices D --workers-per-device N --dtype ...]
    pipeserve admin unload NAME [--grace-s SECONDS]

The admin token goes where every command's token goes: --token-file PATH (its first token line),
--token, or $PIPESERVE_TOKEN. `load` prints the loaded model's ModelInfo as JSON once it
serves; `unload` prints {"name": ..., "calls_cut": ...} once its workers have stopped.
"""

import argparse
import dataclasses

from pipeserve.client.cli import args as cli_args
from pipeserve.v1 import pipeserve_pb2 as pb

# LoadModelRequest's settings, one option each.
_LOAD_OPTIONS = tuple(
    f.name for f in pb.LoadModelRequest.DESCRIPTOR.fields if f.name not in ("name", "path")
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["load", "unload"], help="what to do")
    parser.add_argument("name", help="the model's name (the one requests choose it by)")
    parser.add_argument("path", nargs="?", help="load: checkpoint folder on the server, or hub id")
    load = parser.add_argument_group("load (unset: the server's own value)")
    load.add_argument("--revision", help="hub revision (branch, tag or commit)")
    load.add_argument(
        "--task",
        help="head to load: auto, feature-extraction, text-classification, "
        "token-classification or fill-mask",
    )
    load.add_argument("--devices", help="auto, cpu or GPU indices such as 0,1")
    load.add_argument("--workers-per-device", type=int, metavar="N")
    load.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    load.add_argument("--quantize", choices=["none", "int8", "int8-static"])
    load.add_argument("--backend", choices=["torch", "openvino", "auto"])
    parser.add_argument(
        "--grace-s",
        type=float,
        metavar="SECONDS",
        help="unload: how long its calls get to finish (default: the server's --shutdown-grace-s)",
    )


def _check(args: argparse.Namespace) -> None:
    if args.action == "load":
        if args.path is None:
            raise cli_args.UsageError("admin load needs NAME and PATH")
        if args.grace_s is not None:
            raise cli_args.UsageError("--grace-s goes with admin unload")
        return
    given = [f"--{o.replace('_', '-')}" for o in _LOAD_OPTIONS if getattr(args, o) is not None]
    if args.path is not None or given:
        extra = given[0] if given else f"PATH {args.path}"
        raise cli_args.UsageError(f"admin unload takes NAME only (and --grace-s), not {extra}")


def run(args: argparse.Namespace) -> int:
    from pipeserve.client.admin import AdminClient

    _check(args)
    with AdminClient(args.target, timeout=args.timeout, **cli_args.security(args)) as admin:
        if args.action == "unload":
            cut = admin.unload_model(args.name, grace_s=args.grace_s)
            cli_args.print_json({"name": args.name, "calls_cut": cut}, args)
            return 0
        options = {option: getattr(args, option) for option in _LOAD_OPTIONS}
        info = admin.load_model(args.name, args.path, **options)
    cli_args.print_json(dataclasses.asdict(info), args)
    return 0
