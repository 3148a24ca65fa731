"""Shape rules a newcomer relies on, checked on the source: no function in the trainer or the pipeline
runs over 60 lines, except where a `# long:` comment on the line above its `def` says why."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "trainer" / "finetrain", ROOT / "pipeline" / "fineprep")
MAX_LINES = 60


def long_functions(path: Path) -> list[str]:
    """`file:line name (N lines)` for each function over MAX_LINES without a `# long:` reason."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        length = node.end_lineno - node.lineno + 1
        above = lines[first - 2].strip() if first >= 2 else ""
        if length > MAX_LINES and not above.startswith("# long:"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_over_sixty_lines():
    found = [hit for pkg in PACKAGES for path in sorted(pkg.rglob("*.py")) for hit in long_functions(path)]
    assert not found, "functions over 60 lines (split them, or say why in a `# long:` comment):\n" + "\n".join(found)


def test_the_rule_sees_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n\n# long: a table of cases\ndef g():\n{body}\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert long_functions(tmp_path / "m.py") == ["m.py:1 f (61 lines)"]
