"""Check a store against the contract and say exactly what is wrong.

Readers call `validate_store` before doing any work, so a store from another schema version,
a missing array or a manifest with the wrong columns fails in one line, up front.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from . import layout, tables
from .errors import SchemaError
from .labels import LABEL_SETS
from .limits import LimitError, check_frames, check_size
from .version import SCHEMA_VERSION


class StoreError(SchemaError):
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
    try:  # bounded before any reader sizes an allocation by them
        frames = None if frames is None else check_frames(frames, f"{layout.ARRAYS_DIR} attribute")
        size = None if size is None else check_size(size, f"{layout.ARRAYS_DIR} attribute")
    except LimitError as exc:
        problems.append(str(exc))
        frames = size = None
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


def chunk_file(zroot: Path, name: str, array, index: int) -> Path:
    """The file holding clip `index`'s chunk of array `name` (one clip per chunk), by the array's own
    chunk key encoding."""
    return Path(chunk_files(zroot, name, array)(index))


def chunk_files(zroot: Path, name: str, array):
    """index -> path string of that clip's chunk file; the key encoding is asked once, for a marker
    index, so checking many clips costs one string join and one stat each."""
    head, tail = os.path.join(str(zroot), name, _marker_key(array)).split(str(_MARKER))
    return lambda index: f"{head}{index}{tail}"


_MARKER = 987654321


def _marker_key(array) -> str:
    return array.metadata.chunk_key_encoding.encode_chunk_key((_MARKER,) + (0,) * (array.ndim - 1))


def stored_clips(zroot: Path, name: str, array) -> set[int]:
    """Clip indices with chunk data in array `name`, from one listing of the folder that holds the clip
    level of the chunk keys (`c/` under the default encoding, whose entries are `c/<index>/...`)."""
    parts = f"{name}/{_marker_key(array)}".split("/")
    level = next(k for k, part in enumerate(parts) if str(_MARKER) in part)
    before, after = parts[level].split(str(_MARKER))
    folder = os.path.join(str(zroot), *parts[:level])
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return set()  # other OSErrors (permissions) propagate: unreadable is not missing
    found = set()
    for entry in names:
        middle = entry[len(before):len(entry) - len(after)] if entry.startswith(before) and entry.endswith(after) \
            else ""
        if middle.isdigit():
            found.add(int(middle))
    return found


def _examples(items: list, k: int = 3) -> str:
    shown = ", ".join(str(x) for x in items[:k])
    return shown + (", ..." if len(items) > k else "")


def _check_rows(root: Path, manifest: Path, n: int, deep: bool, problems: list[str]) -> None:
    """Rows against arrays: indices in range and unshared, every ok clip's chunks on disk; with `deep`,
    every ok clip's chunks decode to the layout's shape and dtype."""
    from collections import Counter

    import zarr

    idx = pq.read_table(manifest, columns=["clip_id", "store_index", "status"]).to_pydict()
    rows = list(zip(idx["clip_id"], idx["store_index"], idx["status"], strict=True))
    bad = [i for _, i, s in rows if s in tables.STORED_STATUSES and (i is None or not 0 <= i < n)]
    if bad:
        problems.append(f"{layout.MANIFEST_FILE}: {len(bad)} stored rows (ok, few_faces, no_face) point outside "
                        f"the arrays (0..{n - 1})")
    clips = Counter(c for c, _, _ in rows)
    twice = sorted(c for c, k in clips.items() if k > 1)
    if twice:
        problems.append(f"{layout.MANIFEST_FILE}: {len(twice)} clip ids appear in several rows ({_examples(twice)})")
    owners = Counter(i for _, i, _ in rows if i is not None and i >= 0)
    shared = sorted(i for i, k in owners.items() if k > 1)
    if shared:
        problems.append(f"{layout.MANIFEST_FILE}: {len(shared)} store_index values are shared by several rows "
                        f"({_examples(shared)})")
    ok = sorted((i, c) for c, i, s in rows if s in tables.STORED_STATUSES and i is not None and 0 <= i < n)
    zroot = root / layout.ARRAYS_DIR
    group = zarr.open_group(str(zroot), mode="r")
    for spec in layout.ARRAYS:
        if spec.name not in group:
            continue
        arr = group[spec.name]
        try:
            missing = _missing_chunks(zroot, spec.name, arr, ok, deep)
        except OSError as exc:  # the data may well be there: never advise --overwrite for it
            problems.append(unreadable(f"{layout.ARRAYS_DIR}/{spec.name}", exc))
            continue
        if missing:
            problems.append(f"{layout.ARRAYS_DIR}/{spec.name}: {len(missing)} stored clips have no stored chunk "
                            f"({_examples(missing)}); re-extract them (`fineprep extract --overwrite`)")
        if deep:
            gone = set(missing)
            _decode_all(zroot, spec, arr, [(i, c) for i, c in ok if c not in gone], problems)


def unreadable(what: str, exc: OSError) -> str:
    """The problem line for data that is there but cannot be read (not to be re-extracted)."""
    where = os.fsdecode(exc.filename) if exc.filename else what
    return (f"{what}: cannot be read ({exc.strerror or exc} at {where}); the data may be intact: fix the "
            "permissions (or the disk) and validate again; do not re-extract with --overwrite")


def _missing_chunks(zroot: Path, name: str, arr, ok: list[tuple[int, str]], deep: bool) -> list[str]:
    """Ok clips without a chunk file; an OSError other than "not there" (permissions) propagates."""
    if not deep:   # one listing per array
        stored = stored_clips(zroot, name, arr)
        return [c for i, c in ok if i not in stored]
    path_of = chunk_files(zroot, name, arr)  # every chunk file itself
    missing = []
    for i, c in ok:
        try:
            os.stat(path_of(i))
        except (FileNotFoundError, NotADirectoryError):
            missing.append(c)
    return missing


def _decode_all(zroot: Path, spec, arr, clips: list[tuple[int, str]], problems: list[str]) -> None:
    """Decode every listed clip's chunk; a chunk of another size or item size (e.g. written by a run with
    other settings) fails to decode or shows in its Blosc header, which records both."""
    import numpy as np

    want_bytes = int(np.prod(arr.chunks)) * np.dtype(spec.dtype).itemsize
    itemsize = np.dtype(spec.dtype).itemsize
    bad: list[str] = []
    for i, clip in clips:
        try:
            with open(chunk_file(zroot, spec.name, arr, i), "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            problems.append(unreadable(f"{layout.ARRAYS_DIR}/{spec.name}", exc))
            return
        if len(head) == 16 and head[0] == 2:  # Blosc1 header: version 2, typesize, nbytes
            typesize, nbytes = head[3], int.from_bytes(head[4:8], "little")
            if typesize != itemsize or nbytes != want_bytes:
                bad.append(f"{clip}: {nbytes} bytes of {typesize}-byte items, expected {want_bytes} of {itemsize}")
                continue
        try:
            value = arr[i]
        except Exception as exc:  # noqa: BLE001 - any chunk that does not decode is the finding
            bad.append(f"{clip}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if value.shape != tuple(arr.chunks[1:]) or str(value.dtype) != spec.dtype:
            bad.append(f"{clip}: decoded {value.shape} {value.dtype}")
    if bad:
        problems.append(f"{layout.ARRAYS_DIR}/{spec.name}: {len(bad)} stored clips have chunks that do not match "
                        f"the layout ({_examples(bad, 2)})")


def _older_version(root: Path) -> str | None:
    """The one problem of a store written by an older schema version, or None."""
    import zarr

    try:
        version = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r").attrs.get("schema_version")
        version = int(version) if version is not None else None
    except Exception:  # noqa: BLE001 - not readable: _check_arrays says how
        return None
    if version is not None and version < SCHEMA_VERSION:
        return (f"written by schema version {version}, older than this fineclip's {SCHEMA_VERSION} (mesh scores, "
                "faceless clips stored and scored, frames_input came later); re-run `fineprep extract --overwrite`")
    return None


def validate_store(path: str | Path, deep: bool = False) -> list[str]:
    """Return the list of problems with the store at `path` (empty when it meets the contract).

    The default check reads metadata and the manifest and checks that every ok clip has chunks in every
    array (one folder listing per array, no chunk is read); `deep` looks for each chunk file and
    decodes every chunk of every ok clip.
    """
    root = Path(path)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: no store here (run `fineprep extract --out {root}` first)"]
    older = _older_version(root)
    if older:
        return [older]  # its missing arrays and columns all follow from that: one line, what to do
    manifest = root / layout.MANIFEST_FILE
    if not manifest.exists():
        problems.append(f"{layout.MANIFEST_FILE} is missing")
    else:
        _check_schema(manifest, tables.MANIFEST, problems)
    n = _check_arrays(root, problems)
    if manifest.exists() and n is not None and not problems:
        _check_rows(root, manifest, n, deep, problems)
    desc_dir = root / layout.DESCRIPTIONS_DIR
    if desc_dir.is_dir():
        for part in sorted(desc_dir.glob("*.parquet")):
            _check_schema(part, tables.DESCRIPTION, problems)
    return problems


def check_store(path: str | Path, deep: bool = False) -> None:
    """Raise StoreError naming every problem, or return quietly."""
    problems = validate_store(path, deep=deep)
    if problems:
        raise StoreError(f"store {path} is not valid: " + "; ".join(problems))
