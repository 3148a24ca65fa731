"""One definition each of the things two readers must agree on (read from the source with `ast`).

A second copy of the run-folder layout, of the choice of a store's descriptions, of the atomic Parquet
write or of the describe step is how two readers drift apart; these tests find one by name. (That
Parquet files are written only through the atomic writer is `test_store_io`'s check.)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from test_imports import REPO, _modules

# The inside of one checkpoint folder (model/optimizer safetensors, state.json) is the checkpoint
# format's, owned by `finetrain.train.checkpoint`; the run folder around it is `finetrain.rundir`'s.
RUN_FOLDER_NAMES = ("run.json", "metrics.jsonl", "metrics.csv", "test.json", "predictions.parquet",
                    "checkpoints", "config.yaml")


def _sources(top: str | None = None) -> dict[Path, ast.Module]:
    """Source file -> syntax tree, for every module of the project's packages (or of one, `top`)."""
    return {path: ast.parse(path.read_text(), str(path)) for name, path in sorted(_modules().items())
            if top is None or name.split(".")[0] == top}


def _definitions(name: str) -> list[str]:
    return [f"{p.relative_to(REPO)}:{n.lineno}" for p, tree in _sources().items() for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name]


@pytest.mark.parametrize("name, home", [
    ("write_parquet_atomic", "schemas/fineschema/store_io.py"),
    ("choose_descriptions", "schemas/fineschema/store_io.py"),
    ("read_manifest", "schemas/fineschema/store_io.py"),
    ("describe_chunk", "pipeline/fineprep/describe/step.py"),
    ("RunDir", "trainer/finetrain/rundir.py"),
])
def test_defined_once(name, home):
    where = _definitions(name)
    assert len(where) == 1 and where[0].startswith(home + ":"), where


def test_run_folder_names_live_in_rundir():
    """The trainer names a run folder's files only through `finetrain.rundir`."""
    bad = [f"{p.relative_to(REPO)}:{n.lineno}: {n.value!r}" for p, tree in _sources("finetrain").items()
           if p.name != "rundir.py" for n in ast.walk(tree)
           if isinstance(n, ast.Constant) and n.value in RUN_FOLDER_NAMES]
    assert not bad, bad


def test_the_finders_find_a_second_copy(monkeypatch):
    """The checks above can fail: a planted copy of the atomic writer is found."""
    planted = REPO / "planted" / "copy.py"
    fake = {**_sources(), planted: ast.parse("def write_parquet_atomic():\n    pass\n")}
    monkeypatch.setattr(sys.modules[__name__], "_sources", lambda top=None: fake)
    assert _definitions("write_parquet_atomic")[-1] == "planted/copy.py:1"
    assert len(_definitions("write_parquet_atomic")) == 2
