"""Check a store against the contract and say exactly what is wrong.

Readers call `validate_store` before doing any work, so a store from another schema version,
a missing array or a manifest with the wrong columns fails in one line, up front.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from . import layout, tables
from .labels import LABEL_SETS
from .version import SCHEMA_VERSION


class StoreError(ValueError):
    """A store that does not meet the contract. The message lists every problem found."""


def _check_schema(path: Path, expected, problems: list[str]) -> None:
    try:
        found = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file as a problem
        problems.append(f"{path.name}: not a readable Parquet file ({exc})")
        return
    version = (found.metadata or {}).get(b"schema_version")
    if version is not None and int(version) > SCHEMA_VERSION:
        problems.append(
            f"{path.name}: written by schema version {int(version)}, newer than this fineclip's "
            f"{SCHEMA_VERSION}; upgrade fineclip to read it"
        )
        return
    for field in expected:
        if field.name not in found.names:
            problems.append(f"{path.name}: column {field.name!r} is missing")
        elif not found.field(field.name).type.equals(field.type):
            problems.append(
                f"{path.name}: column {field.name!r} is {found.field(field.name).type}, expected {field.type}"
            )


def _check_arrays(root: Path, problems: list[str]) -> int | None:
    import zarr

    zpath = root / layout.ARRAYS_DIR
    if not zpath.exists():
        problems.append(f"{layout.ARRAYS_DIR} is missing")
        return None
    try:
        group = zarr.open_group(str(zpath), mode="r")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{layout.ARRAYS_DIR}: not a Zarr group ({exc})")
        return None
    attrs = dict(group.attrs)
    version = attrs.get("schema_version")
    if version is None:
        problems.append(f"{layout.ARRAYS_DIR}: attribute 'schema_version' is missing")
    elif int(version) > SCHEMA_VERSION:
        problems.append(
            f"{layout.ARRAYS_DIR}: written by schema version {version}, newer than this fineclip's "
            f"{SCHEMA_VERSION}; upgrade fineclip to read it"
        )
        return None
    elif int(version) < SCHEMA_VERSION:
        problems.append(
            f"{layout.ARRAYS_DIR}: schema version {version} is older than {SCHEMA_VERSION}; "
            "re-run `fineprep extract --overwrite`"
        )
    for key in layout.REQUIRED_ATTRS:
        if key not in attrs:
            problems.append(f"{layout.ARRAYS_DIR}: attribute {key!r} is missing")
    if "label_set" in attrs and attrs["label_set"] not in LABEL_SETS:
        problems.append(f"{layout.ARRAYS_DIR}: unknown label_set {attrs['label_set']!r}")
    if "parsing_classes" in attrs:
        problem = _parsing_classes_problem(attrs)
        if problem:
            problems.append(f"{layout.ARRAYS_DIR}: {problem}")
    frames, size = attrs.get("frames"), attrs.get("size")
    n = None
    for spec in layout.ARRAYS:
        if spec.name not in group:
            problems.append(f"{layout.ARRAYS_DIR}: array {spec.name!r} is missing")
            continue
        arr = group[spec.name]
        if str(arr.dtype) != spec.dtype:
            problems.append(f"{layout.ARRAYS_DIR}/{spec.name}: dtype {arr.dtype}, expected {spec.dtype}")
        if frames is not None and size is not None:
            want = spec.concrete_shape(arr.shape[0], int(frames), int(size))
            if tuple(arr.shape) != want:
                problems.append(f"{layout.ARRAYS_DIR}/{spec.name}: shape {tuple(arr.shape)}, expected {want}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            problems.append(f"{layout.ARRAYS_DIR}/{spec.name}: {arr.shape[0]} clips, other arrays have {n}")
    return n


def _parsing_classes_problem(attrs: dict) -> str | None:
    """The class list must be a known parser's, and the one of the parser the store names (if it names one)."""
    classes = list(attrs["parsing_classes"])
    known = {name: list(c) for name, c in layout.PARSING_CLASS_SETS.items()}
    parser = attrs.get("parser")
    name = parser.get("name") if isinstance(parser, dict) else None
    if name is not None:
        if name not in known:
            return f"unknown parser {name!r} (known: {', '.join(known)})"
        if classes != known[name]:
            return f"parsing_classes {classes} differ from the contract's {name} classes {known[name]}"
    elif classes not in known.values():
        return f"parsing_classes {classes} differ from every parser's in the contract ({', '.join(known)})"
    return None


def validate_store(path: str | Path) -> list[str]:
    """Return the list of problems with the store at `path` (empty when it meets the contract)."""
    root = Path(path)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: no store here (run `fineprep extract --out {root}` first)"]
    manifest = root / layout.MANIFEST_FILE
    if not manifest.exists():
        problems.append(f"{layout.MANIFEST_FILE} is missing")
    else:
        _check_schema(manifest, tables.MANIFEST, problems)
    n = _check_arrays(root, problems)
    if manifest.exists() and n is not None and not problems:
        idx = pq.read_table(manifest, columns=["store_index", "status"]).to_pydict()
        bad = [i for i, s in zip(idx["store_index"], idx["status"], strict=True)
               if s == tables.STATUS_OK and (i is None or not 0 <= i < n)]
        if bad:
            problems.append(f"{layout.MANIFEST_FILE}: {len(bad)} ok rows point outside the arrays (0..{n - 1})")
    desc_dir = root / layout.DESCRIPTIONS_DIR
    if desc_dir.is_dir():
        for part in sorted(desc_dir.glob("*.parquet")):
            _check_schema(part, tables.DESCRIPTION, problems)
    return problems


def check_store(path: str | Path) -> None:
    """Raise StoreError naming every problem, or return quietly."""
    problems = validate_store(path)
    if problems:
        raise StoreError(f"store {path} is not valid: " + "; ".join(problems))
