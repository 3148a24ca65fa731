"""The packages' import graph: no cycles, and the layers point one way.

The graph is read from the source with `ast` (nothing is imported), with relative imports resolved.
Imports inside functions count as much as those at module level: a deferred import only hides a cycle
from the interpreter, the two modules still need each other, and it is the layering a reader must
follow. Imports under `if TYPE_CHECKING:` are left out (they never run). An edge goes to the module an
import names (`from .x import y` -> `x`, or `x.y` when `y` is a submodule); the parent packages that
Python initialises on the way are not edges, as in the usual import linters.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def _modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the project's packages."""
    out = {}
    for top, rel in PACKAGE_DIRS.items():
        root = REPO / rel
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([top, *parts])] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, outside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str) -> str | None:
    """The deepest project module that `name` is or lies in; None for outside modules."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Project modules `module` imports (itself excluded)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem
                       for alias in node.names]
        found |= {m for m in map(_known, targets) if m and m != module}
    return found


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of(m) for m in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest closed path through the component's first module (breadth-first)."""
    start = min(comp)
    parent: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{sorted(comp)} is not strongly connected")


def test_the_walker_resolves_relative_and_absolute_imports():
    graph = import_graph()
    assert len(MODULES) > 40 and {"fineprep.cli", "finetrain.model.model", "fineschema.layout"} <= set(MODULES)
    assert {"finetrain.train.checkpoint", "finetrain.data.store"} <= graph["finetrain.train.recipe"]  # relative imports
    assert "fineschema.layout" in graph["finetrain.data.store"]  # absolute import of another package
    assert not any(m.split(".")[0] not in PACKAGE_DIRS for deps in graph.values() for m in deps)


def test_the_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The trainer's sub-packages are layers: each may import only the ones listed for it (and the top-level
# modules, `errors`, `config`, `rundir`, `runinfo`, which import no sub-package). `commands/` and `cli`
# sit above all of them.
TRAINER_LAYERS = {
    "data": set(),
    "model": {"data"},
    "score": set(),
    "train": {"data", "model", "score"},
    "evaluate": {"data", "model", "score", "train"},
}


def _trainer_part(module: str) -> str:
    """The sub-package of a finetrain module ("" for a top-level module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in TRAINER_LAYERS) else ""


def test_the_trainer_model_and_data_never_import_its_loop_or_its_evaluation():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if _trainer_part(d) in ("train", "evaluate"))
           for m, deps in graph.items() if m.startswith("finetrain.") and _trainer_part(m) in ("model", "data")}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_the_trainer_sub_packages_are_layers_with_no_arrow_up():
    graph = import_graph()
    assert set(TRAINER_LAYERS) <= {_trainer_part(m) for m in graph if m.startswith("finetrain.")}
    bad = {}
    for m, deps in graph.items():
        if not m.startswith("finetrain.") or _trainer_part(m) == "commands" or m == "finetrain.cli":
            continue
        part = _trainer_part(m)
        allowed = TRAINER_LAYERS.get(part, set()) | {part, ""}
        up = sorted(d for d in deps if d.startswith("finetrain.") and _trainer_part(d) not in allowed)
        if up:
            bad[m] = up
    assert not bad, bad


def test_the_trainer_and_the_contract_never_import_the_pipeline():
    """The trainer reads only the store (`finetrain predict` reaches the pipeline through its one
    documented seam, `finetrain.evaluate.predict.extract_videos`); the contract imports neither program."""
    graph = import_graph()
    allowed = {"finetrain.evaluate.predict"}
    bad = {m: sorted(d for d in deps if d.startswith("fineprep"))
           for m, deps in graph.items() if m.startswith("finetrain") and m not in allowed}
    assert not {m: d for m, d in bad.items() if d}, bad
    schema = {m: sorted(d for d in deps if d.split(".")[0] in ("fineprep", "finetrain"))
              for m, deps in graph.items() if m.startswith("fineschema")}
    assert not {m: d for m, d in schema.items() if d}, schema


def test_one_letter_aliases_are_only_F_for_torch_functional():
    """`F` is `torch.nn.functional` everywhere; no other module or name is imported under one letter."""
    bad = []
    for folder in (*PACKAGE_DIRS.values(), "tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in _import_nodes(ast.parse(path.read_text(), str(path))):
                base = node.module if isinstance(node, ast.ImportFrom) else None
                for alias in node.names:
                    full = f"{base}.{alias.name}" if base else alias.name
                    if alias.asname and len(alias.asname) == 1 and (alias.asname, full) != ("F", "torch.nn.functional"):
                        bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {full} as {alias.asname}")
    assert not bad, bad
