"""spineflow's import graph: which module imports which, its cycles, and imports against the
order of the stages (``spineflow-dev imports`` prints it; tests/test_architecture.py checks it).

A stage may import the core and the stages before it, never one after it: the order is the
pipeline's (rules/), with the QC figures and the cohort report after every stage they draw, and
the workflow's plan last (it names every stage's outputs)."""

from __future__ import annotations

import ast
from pathlib import Path

import spineflow

STAGE_ORDER = ("core", "convert", "preprocess", "segment", "measure", "register",
               "longitudinal", "cohort", "stats", "report", "workflow")  # fmt: skip


def module_imports(package_dir: Path | None = None) -> dict[str, set[str]]:
    """Every module of the package (dotted name) -> the package's modules it imports, at any
    depth of its code (a module imported from its package counts as that module)."""
    root = Path(package_dir or Path(spineflow.__file__).parent)
    top = root.name
    modules = {_dotted(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == top or node.module.startswith(top + "."):
                    found |= {_resolved(node.module, a.name, modules) for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith(top + ".")}
        graph[name] = {m for m in found if m != name}
    return graph


def _dotted(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolved(module: str, name: str, modules: dict) -> str:
    return f"{module}.{name}" if f"{module}.{name}" in modules else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (each as a path back to its start), by depth-first search."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def stage(module: str) -> str | None:
    """The stage package a module belongs to (None: the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def backward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a stage imports a later one or one outside the order."""
    bad = []
    for importer, imported in sorted((a, b) for a, bs in graph.items() for b in bs):
        here, there = stage(importer), stage(imported)
        if there is None or here == there:
            continue
        if here not in STAGE_ORDER or there not in STAGE_ORDER:
            bad.append((importer, imported))
        elif STAGE_ORDER.index(there) > STAGE_ORDER.index(here):
            bad.append((importer, imported))
    return bad


def stage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between stage packages."""
    out: dict[str, set[str]] = {}
    for importer, imported in ((a, b) for a, bs in graph.items() for b in bs):
        here, there = stage(importer), stage(imported)
        if here and there and here != there:
            out.setdefault(here, set()).add(there)
    return out


def dot(graph: dict[str, set[str]]) -> str:
    """Graphviz DOT text of a graph."""
    edges = "".join(f'  "{a}" -> "{b}";\n' for a in sorted(graph) for b in sorted(graph[a]))
    return "digraph imports {\n  rankdir=LR;\n" + edges + "}\n"


def summary(graph: dict[str, set[str]]) -> str:
    lines = [f"{len(graph)} modules, {sum(map(len, graph.values()))} imports"]
    lines += [f"{s} imports: {', '.join(sorted(t))}" for s, t in sorted(stage_graph(graph).items())]
    lines += [f"cycle: {' -> '.join(c)}" for c in cycles(graph)] or ["no cycle"]
    lines += [f"backward: {a} imports {b}" for a, b in backward_imports(graph)] or [
        "no stage imports a later one"
    ]
    return "\n".join(lines)
