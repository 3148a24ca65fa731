"""Description parts: one Parquet file per finished chunk, written aside and renamed into place.

A part is named after its content (step.ChunkJob.part_name) and durable once renamed, so a crash loses
at most the chunks in flight. Resume reads the parts back: a clip is done for (model, prompt hash) when it
has an `ok` row for them; failed clips are tried again on the next run (their old error rows stay,
readers take the newest row).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineschema import layout, read_descriptions, tables, write_parquet_atomic
from fineschema.store_io import description_parts

STATUS_OK = "ok"
STATUS_ERROR = "error"


def parts_dir(store: Path) -> Path:
    return Path(store) / layout.DESCRIPTIONS_DIR


def part_files(store: Path) -> list[Path]:
    return description_parts(store)


def read_parts(store: Path, columns: list[str] | None = None) -> pa.Table:
    """Every row of every finished part (temp files of an interrupted write are not parts)."""
    files = part_files(store)
    if not files:
        return tables.DESCRIPTION.empty_table() if columns is None else \
            pa.schema([tables.DESCRIPTION.field(c) for c in columns]).empty_table()
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def done_clip_ids(store: Path, model: str, prompt_hash: str) -> set[str]:
    t = read_parts(store, ["clip_id", "model", "prompt_hash", "status"])
    mask = pc.and_(pc.and_(pc.equal(t["model"], model), pc.equal(t["prompt_hash"], prompt_hash)),
                   pc.equal(t["status"], STATUS_OK))
    return set(t.filter(mask)["clip_id"].to_pylist())


def failed_before(store: Path, model: str, prompt_hash: str) -> Counter:
    """Error rows per clip for (model, prompt hash): a retry of failed clips goes into a part of a new name."""
    t = read_parts(store, ["clip_id", "model", "prompt_hash", "status"])
    mask = pc.and_(pc.and_(pc.equal(t["model"], model), pc.equal(t["prompt_hash"], prompt_hash)),
                   pc.equal(t["status"], STATUS_ERROR))
    return Counter(t.filter(mask)["clip_id"].to_pylist())


def write_part(path: Path, rows: list[dict], note: str | None = None) -> Path:
    """Write `rows` (DESCRIPTION columns) as the part `path` (aside, then renamed into place); returns it.
    `note` goes into the file's metadata (`fineclip_note`), e.g. that the text comes from random weights."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # Parquet column is in ms
    for row in rows:
        row.setdefault("created_at", now)
    table = tables.conform(pa.Table.from_pylist(rows), tables.DESCRIPTION)
    if note:
        table = table.replace_schema_metadata({**table.schema.metadata, b"fineclip_note": note.encode()})
    return write_parquet_atomic(table, path)


def remove_stale_temps(store: Path, shard: tuple[int, int], parts: list[str]) -> int:
    """Delete unfinished part files (`.part-*.tmp`) a killed run left: all of them when this run owns the
    whole store (N = 1), else only those of the parts this shard is about to write (`parts`, the names
    of its chunks), as the other shards' may be in flight."""
    mine = set(parts)
    removed = 0
    for tmp in parts_dir(store).glob(".part-*.tmp"):
        if shard[1] == 1 or tmp.name[1:].split(".parquet.")[0] + ".parquet" in mine:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def writing(store: Path, shard: tuple[int, int]) -> Iterator[None]:
    """The describe job's hold on a store: its shard's writer lock (fineprep.storelock), then the same
    contract check readers make (a store from a newer schema or with a broken manifest is refused
    before anything is written). The job clears its own leftover temporary files once it knows its parts."""
    from fineschema import check_store

    from ..storelock import shard_lock

    store = Path(store)
    if not store.is_dir():
        check_store(store)  # raises, naming the missing store
    with shard_lock(store, shard):
        check_store(store)
        yield


def load_descriptions(store: Path, model: str | None = None, prompt_hash: str | None = None) -> pa.Table:
    """One row per (clip, model, prompt): the newest `ok` row, else the newest row, random-weight rows
    included (fineschema.read_descriptions); filter by model / prompt hash when given."""
    return read_descriptions(store, model=model, prompt=prompt_hash, include_random=True)
