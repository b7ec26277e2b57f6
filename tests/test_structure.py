"""The package's structure, read from its import statements: no import cycles among miaray's modules (lazy
imports inside functions included: they hide a cycle, they do not remove it), and no module too long to
read whole (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "miaray"
MAX_LINES = 400        # any module of miaray/
MAX_UNIT_LINES = 250   # the unit's rooms, read in pipeline order


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The miaray modules `path` imports: `from a.b import c` is a.b.c where that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
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


def test_the_import_graph_is_read_from_the_statements():
    graph = import_graph()
    assert "miaray.config" in graph["miaray.unit.context"] and "miaray.vocabulary" in graph["miaray.config"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_configuration_stays_free_of_torch_and_the_command_line():
    graph = import_graph()
    for module in ("miaray.vocabulary", "miaray.roles", "miaray.config"):
        assert graph[module] <= {"miaray.vocabulary", "miaray.roles"}, (module, graph[module])


# The rooms in the order a run goes through them (docs/architecture.md): a room imports only rooms before it.
LAYERS = [
    {"vocabulary", "roles"},
    {"config", "files", "filelock", "stats"},
    {"data", "models", "train", "prune", "defenses", "attacks", "store"},
    {"unknown_pruning", "pareto", "results", "options", "cli"},
    {"unit"},
    {"sweep"},
    {"search"},
]


def room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_room_imports_only_the_rooms_before_it():
    layer = {name: i for i, rooms in enumerate(LAYERS) for name in rooms}
    graph = import_graph()
    assert {room(m) for m in graph} - {"miaray"} <= set(layer), "a room docs/architecture.md does not place"
    upward = sorted((m, d) for m, deps in graph.items() for d in deps
                    if room(m) != "miaray" and layer[room(d)] > layer[room(m)])
    assert not upward, upward


def test_modules_stay_short_enough_to_read_whole():
    lengths = {module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    too_long = {m: n for m, n in lengths.items()
                if n > (MAX_UNIT_LINES if m.startswith("miaray.unit.") else MAX_LINES)}
    assert not too_long, too_long
