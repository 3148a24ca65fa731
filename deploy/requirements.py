"""Print fineclip's core requirements and those of the named extras, one a line, from pyproject.toml.

The images install these in a layer of their own before the project's wheel, so a change to the
sources rebuilds only the small wheel layer, not gigabytes of dependencies.

    python requirements.py pyproject.toml pipeline describe > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"{pyproject}: no extra named {', '.join(unknown)} (have {', '.join(optional)})")
    return [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: requirements.py PYPROJECT [EXTRA...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
