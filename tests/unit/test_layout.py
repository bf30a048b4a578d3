"""The server's layering, read from the source with `ast` (nothing is imported or run): its
parts import one another without a cycle, the request path and the pure steps know nothing of
gRPC, the pure steps nothing of the processes around them, and the server nothing of the
client. Imports inside functions count: a lazy import is a dependency all the same."""

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

SRC = ROOT / "src"
SERVER = SRC / "pipeserve" / "server"
SUBPACKAGES = (
    "edge",
    "requests",
    "engine",
    "frontends",
    "workers",
    "backends",
    "model",
    "pipeline",
)
# What only the wire format needs: gRPC itself, the generated stubs and their shared helpers.
WIRE = (
    "grpc",
    "grpc_health",
    "grpc_reflection",
    "grpc_status",
    "pipeserve.v1",
    "pipeserve.oip",
    "pipeserve.wire",
)
# The Open Inference Protocol's door: one folder of the edge.
OPEN_INFERENCE = SERVER / "edge" / "oip"


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    nodes: Iterable[ast.AST], typing_too: bool
) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif _is_type_checking(node) and not typing_too:
            yield from _import_nodes(node.orelse, typing_too)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node), typing_too)


def _imports(path: Path, src: Path = SRC, typing_too: bool = True) -> Iterator[str]:
    """Every module `path` (under `src`) imports, at its top or inside a function, as an
    absolute name; for `from M import n` both M and M.n (n may be a module), so that a rule
    on either sees it. `typing_too=False` leaves out the imports under TYPE_CHECKING, which
    name types for annotations and load nothing."""
    package = _module_name(path, src).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in _import_nodes([ast.parse(path.read_text(), str(path))], typing_too):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        else:
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _server_part(module: str) -> str | None:
    """The part of the server `module` belongs to: its subpackage, or the top-level module
    itself (settings, schema, errors, ...); None outside the server."""
    parts = module.split(".")
    if parts[:2] != ["pipeserve", "server"] or len(parts) < 3:
        return None
    return parts[2]


def _server_files() -> list[Path]:
    return sorted(SERVER.rglob("*.py"))


def _imports_by_part() -> dict[str, dict[str, set[str]]]:
    """Server part -> the other server parts it imports -> the files that do. Imports under
    TYPE_CHECKING do not count: they make no cycle at run time."""
    parts = {p.stem for p in SERVER.glob("*.py")} | set(SUBPACKAGES)
    graph: dict[str, dict[str, set[str]]] = {}
    for path in _server_files():
        part = _server_part(_module_name(path))
        if part is None:  # the package's own __init__
            continue
        edges = graph.setdefault(part, {})
        for module in _imports(path, typing_too=False):
            other = _server_part(module)
            if other in parts and other != part:
                edges.setdefault(other, set()).add(str(path.relative_to(SRC)))
    return graph


def _cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one part (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, {}):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _describe(graph: dict[str, dict[str, set[str]]], component: list[str]) -> str:
    return "; ".join(
        f"{part} -> {other} ({', '.join(sorted(files))})"
        for part in component
        for other, files in sorted(graph[part].items())
        if other in component
    )


def test_the_layout_names_every_server_subpackage():
    # A new subpackage must be placed in the layering, not slip past the rules below.
    found = {p.name for p in SERVER.iterdir() if (p / "__init__.py").exists()}
    assert found == set(SUBPACKAGES)


def test_the_server_parts_import_one_another_without_a_cycle():
    graph = _imports_by_part()
    assert set(SUBPACKAGES) <= set(graph)
    assert {"settings", "schema", "errors"} <= set(graph)  # top-level modules are parts too
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + " | ".join(_describe(graph, c) for c in cycles)


def test_the_server_never_imports_the_client_or_the_load_tester():
    offending = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in _server_files()
        for module in _imports(path)
        if _within(module, ("pipeserve.client", "pipeserve.loadtest"))
    ]
    assert not offending


@pytest.mark.parametrize("subpackage", ["requests", "pipeline"])
def test_the_request_path_and_the_pure_steps_know_nothing_of_grpc(subpackage):
    files = sorted((SERVER / subpackage).rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in files
        for module in _imports(path)
        if _within(module, WIRE)
    ]
    assert not offending


def test_the_pure_steps_know_nothing_of_the_processes_around_them():
    around = tuple(
        f"pipeserve.server.{part}"
        for part in ("engine", "frontends", "workers", "edge", "requests")
    )
    offending = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in sorted((SERVER / "pipeline").rglob("*.py"))
        for module in _imports(path)
        if _within(module, around)
    ]
    assert not offending


def test_the_open_inference_door_reaches_the_models_only_through_the_request_path():
    # A door like pipeserve.v1's: the request path's calls, never the engine or the processes
    # behind them, and nothing of pipeserve.v1's messages; only it speaks the protocol.
    behind = tuple(
        f"pipeserve.server.{part}" for part in ("engine", "frontends", "workers", "backends")
    )
    files = sorted(OPEN_INFERENCE.rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in files
        for module in _imports(path)
        if _within(module, (*behind, "pipeserve.v1"))
    ]
    speaking = [
        f"{path.relative_to(SRC)} imports {module}"
        for path in _server_files()
        if OPEN_INFERENCE not in path.parents
        for module in _imports(path)
        if _within(module, ("pipeserve.oip",))
    ]
    assert not offending
    assert not speaking


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    # The rules above are only as good as _imports: a lazy import and a relative one count.
    package = tmp_path / "pipeserve" / "server" / "pipeline"
    package.mkdir(parents=True)
    module = package / "step.py"
    module.write_text(
        "from . import windows\n"
        "from ..engine import queue\n"
        "def late():\n"
        "    import grpc\n"
        "    from pipeserve.server.edge.status import status_of\n"
        "if TYPE_CHECKING:\n"
        "    from pipeserve.server.workers import shm\n"
    )
    found = set(_imports(module, tmp_path))
    assert {
        "grpc",
        "pipeserve.server.edge.status",
        "pipeserve.server.pipeline.windows",
        "pipeserve.server.engine.queue",
        "pipeserve.server.workers.shm",
    } <= found
    assert "pipeserve.server.workers.shm" not in set(_imports(module, tmp_path, typing_too=False))


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b": {"a.py"}}, "b": {"c": {"b.py"}}, "c": {"a": {"c.py"}}, "d": {"a": set()}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _describe(graph, ["a", "b", "c"]) == "a -> b (a.py); b -> c (b.py); c -> a (c.py)"
    assert _cycles({"a": {"b": set()}, "b": {}}) == []
