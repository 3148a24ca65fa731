"""Reading and writing a store's Parquet tables: the one place that says how.

Every reader picks "the description of a clip" through `read_descriptions` and `choose_descriptions`, so
the trainer, `fineprep show` and the describe job agree; a store described by several models or prompts
is never mixed silently. Every Parquet file is written by `write_parquet_atomic`, so a crash leaves the
old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout, tables
from .errors import SchemaError


class DescriptionChoiceError(SchemaError):
    """The store holds descriptions from several (model, prompt) sets and the reader named none of them."""


def write_parquet_atomic(table: pa.Table, path: str | Path, compression: str = "zstd") -> Path:
    """Write to a hidden temporary sibling (`.NAME.<pid>.<rand>.tmp`), fsync it, rename it into place,
    then fsync the folder so the rename itself survives a power cut (skipped where the OS cannot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression=compression)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:          # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_manifest(root: str | Path, *, statuses: Iterable[str] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """The store's manifest (tables.MANIFEST rows), optionally only rows whose status is in `statuses`
    and only `columns` (the status column is read for the filter but returned only if asked for)."""
    path = Path(root) / layout.MANIFEST_FILE
    wanted = None if columns is None else list(columns)
    read = wanted if wanted is None or statuses is None or "status" in wanted else [*wanted, "status"]
    table = pq.read_table(path, columns=read)
    if statuses is not None:
        table = table.filter(pc.is_in(table["status"], value_set=pa.array(list(statuses), pa.string())))
        if wanted is not None:
            table = table.select(wanted)
    return table


def description_parts(root: str | Path) -> list[Path]:
    """Finished description parts (temporary files of an interrupted write are hidden `.part-*.tmp`)."""
    return sorted((Path(root) / layout.DESCRIPTIONS_DIR).glob("part-*.parquet"))


def read_descriptions(root: str | Path, *, model: str | None = None, prompt: str | None = None,
                      include_random: bool = False) -> pa.Table:
    """One row per (clip, model, prompt id, prompt hash): the newest `ok` row, else the newest row.

    `model` keeps one model's rows; `prompt` keeps rows whose prompt id or prompt hash equals it. Rows a
    random-weight model wrote (meaningless text) are left out unless `include_random`."""
    files = description_parts(root)
    if not files:
        return tables.DESCRIPTION.empty_table()
    t = pa.concat_tables([tables.conform(pq.read_table(f), tables.DESCRIPTION) for f in files])
    if model is not None:
        t = t.filter(pc.equal(t["model"], model))
    if prompt is not None:
        t = t.filter(pc.or_(pc.equal(t["prompt_id"], prompt), pc.equal(t["prompt_hash"], prompt)))
    if not include_random:
        t = t.filter(pc.invert(pc.fill_null(t["random_weights"], False)))
    best: dict[tuple, tuple[tuple, int]] = {}
    keys = zip(t["clip_id"].to_pylist(), t["model"].to_pylist(), t["prompt_id"].to_pylist(),
               t["prompt_hash"].to_pylist(), t["status"].to_pylist(), t["created_at"].to_pylist(), strict=True)
    for i, (clip, m, pid, ph, status, when) in enumerate(keys):
        rank = (status == tables.STATUS_OK, when.timestamp() if when is not None else float("-inf"), i)
        key = (clip, m, pid, ph)
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, i)
    order = sorted(best.items(), key=lambda kv: (kv[0], kv[1][1]))
    return t.take(pa.array([i for _, (_, i) in order], pa.int64()))


def description_sets(table: pa.Table) -> list[tuple[str, str]]:
    """The (model, prompt id) pairs with at least one usable (ok, non-empty) description, oldest first."""
    usable = _usable(table)
    newest: dict[tuple[str, str], float] = {}
    for m, p, when in zip(usable["model"].to_pylist(), usable["prompt_id"].to_pylist(),
                          usable["created_at"].to_pylist(), strict=True):
        stamp = when.timestamp() if when is not None else float("-inf")
        newest[(m, p)] = max(stamp, newest.get((m, p), float("-inf")))
    return sorted(newest, key=lambda s: (newest[s], s))


def _usable(table: pa.Table) -> pa.Table:
    text = pc.utf8_trim_whitespace(pc.fill_null(pc.coalesce(table["refined_text"], table["raw_text"]), ""))
    return table.filter(pc.and_(pc.equal(table["status"], tables.STATUS_OK), pc.greater(pc.utf8_length(text), 0)))


def choose_descriptions(root: str | Path, *, model: str | None = None, prompt: str | None = None,
                        random_weights: bool = False, newest: bool = False,
                        keys: tuple[str, str] = ("model", "prompt")) -> tuple[dict[str, dict], tuple | None]:
    """clip id -> its description row from one (model, prompt id) set, and that set (None: no descriptions).

    The set is the one present, or the one `model` / `prompt` name. With several left and none named, the
    newest set is taken when `newest`, else DescriptionChoiceError is raised naming the sets and the
    `keys` to set. `random_weights` reads only the rows of random-weight models (True) or only the others.
    Within a set each clip's newest ok row wins (a prompt edited between runs keeps its id)."""
    table = read_descriptions(root, model=model, prompt=prompt, include_random=random_weights)
    if random_weights:
        table = table.filter(pc.fill_null(table["random_weights"], False))
    table = _usable(table)
    sets = description_sets(table)
    if not sets:
        return {}, None
    if len(sets) > 1 and not newest:
        listed = ", ".join(f"{m} / {p}" for m, p in sets)
        raise DescriptionChoiceError(
            f"store {root}: descriptions come from {len(sets)} (model / prompt) sets ({listed}); "
            f"name one with {keys[0]}=... and, if a model has several prompts, {keys[1]}=...")
    chosen = sets[-1]
    rows: dict[str, dict] = {}
    for row in table.to_pylist():
        if (row["model"], row["prompt_id"]) != chosen:
            continue
        old = rows.get(row["clip_id"])
        if old is None or _stamp(row) >= _stamp(old):
            rows[row["clip_id"]] = row
    return rows, chosen


def _stamp(row: dict) -> float:
    when = row.get("created_at")
    return when.timestamp() if when is not None else float("-inf")


def description_counts(root: str | Path, *, model: str | None = None, prompt: str | None = None) -> dict[str, int]:
    """How many description rows the store (or the named model / prompt) holds and what became of them:
    `rows` (one per clip and set), `failed` (status not ok), `empty` (ok, but nothing left after
    refinement), `random` (usable text from a random-weight model), `usable` (the rest). A reader that
    finds nothing to train on says these numbers instead of "no descriptions"."""
    table = read_descriptions(root, model=model, prompt=prompt, include_random=True)
    counts = {"rows": table.num_rows, "failed": 0, "empty": 0, "random": 0, "usable": 0}
    texts = table["refined_text"].to_pylist()
    for status, text, rnd in zip(table["status"].to_pylist(), texts, table["random_weights"].to_pylist(),
                                 strict=True):
        kind = ("failed" if status != tables.STATUS_OK else "empty" if not (text or "").strip()
                else "random" if rnd else "usable")
        counts[kind] += 1
    return counts


def counts_line(counts: dict[str, int]) -> str:
    """`description_counts` as words: "14 description rows, 14 empty after refinement"."""
    words = {"failed": "failed", "empty": "empty after refinement", "random": "from a random-weight model",
             "usable": "usable"}
    parts = [f"{counts['rows']} description rows"]
    parts += [f"{counts[k]} {w}" for k, w in words.items() if counts[k] and k != "usable"]
    if counts["rows"]:
        parts.append(f"{counts['usable']} usable")
    return ", ".join(parts)
