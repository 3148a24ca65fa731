"""The trainer's layers: the model finalises batches through `transforms` without importing the store
reader, and the toy store is a test fixture the installed package never imports."""

from __future__ import annotations

from pathlib import Path

from test_imports import MODULES, import_graph

REPO = Path(__file__).resolve().parents[1]


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for dep in graph[stack.pop()] - seen:
            seen.add(dep)
            stack.append(dep)
    return seen


def test_the_model_does_not_import_the_data_loader():
    graph = import_graph()
    assert "finetrain.data.transforms" in graph["finetrain.model.model"] and "finetrain.data.transforms" in graph["finetrain.data.store"]
    assert "finetrain.data.store" not in _reachable(graph, "finetrain.model.model"), sorted(_reachable(graph, "finetrain.model.model"))


def test_the_toy_store_lives_in_the_tests_only():
    assert not any("toy" in name for name in MODULES if name.startswith("finetrain"))
    users = [p.relative_to(REPO) for folder in ("trainer", "pipeline", "schemas") for p in (REPO / folder).rglob("*.py")
             if "toy_store" in p.read_text() or "toystore" in p.read_text()]
    assert not users, users
    assert (REPO / "tests" / "toy_store.py").exists()
