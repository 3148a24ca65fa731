"""Writing a store: the Zarr arrays, per-batch manifest parts (the done markers) and the compacted manifest.

Order of writes for a batch: every clip's array chunks first, then the batch's part, written to a
temporary name and renamed into place. A part therefore exists only when all its data does; a run
killed at any moment leaves at worst a batch without a part, which the next run simply redoes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fineschema import labels, layout, tables, write_parquet_atomic
from fineschema.version import SCHEMA_VERSION

from ..entries import ClipEntry
from ..errors import FineprepError

INDEX_PART = "index.parquet"  # clips the index already settled (missing, bad annotation, outside root)


class SettingsMismatch(FineprepError, ValueError):
    """The store was started with other settings or another clip list; mixing them would corrupt it."""


def plan_digest(clip_ids: list[str]) -> str:
    """A fingerprint of the ordered clip list that fixes every clip's store_index."""
    return hashlib.sha256("\n".join(clip_ids).encode()).hexdigest()


def store_attrs(*, dataset: str, source: str, label_set: str, landmark_sha256: str, settings: dict,
                num_clips: int, plan_sha256: str, parser: dict | None = None,
                detector_sha256: str | None = None, detectors: list[dict] | None = None) -> dict:
    """`parser` is {name, weights_sha256} of the parser that makes the maps (default: the mesh parser);
    the weights' path stays out (it is where they lie on this machine, not what they are); `detectors` is
[{name, sha256}] of every face detector the job may run, in the order it asks them."""
    parser = parser or {"name": "mesh", "weights_sha256": None}
    settings = {k: v for k, v in settings.items() if k != "parser_weights"}
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "frames": int(settings["frames"]),
        "size": int(settings["size"]),
        "parsing_classes": list(layout.PARSING_CLASS_SETS[parser["name"]]),
        "parser": {"name": parser["name"], "weights_sha256": parser.get("weights_sha256")},
        "landmark_model_sha256": landmark_sha256,
        "detector_model_sha256": detector_sha256,  # the face detector run over tiles (a member of the bundle)
        "detectors": detectors or [],
        "label_set": label_set,
        "source": source,
        "settings": {**settings, "num_clips": num_clips, "plan_sha256": plan_sha256},
    }
    return attrs


def _normalise(value):
    return json.loads(json.dumps(value))


def _recorded(zpath: Path) -> tuple[str, dict | None]:
    """What arrays.zarr says about its settings: ("set", attrs), or ("unset", None) when the folder is
    absent, has no zarr.json or has no attributes yet (a run killed while creating it), or
    ("unreadable", None) when zarr.json is there but does not open."""
    import zarr

    if not (zpath / "zarr.json").exists():
        return "unset", None
    try:
        attrs = dict(zarr.open_group(str(zpath), mode="r").attrs)
    except Exception:  # noqa: BLE001 - any unreadable group is reported the same way
        return "unreadable", None
    return ("set", attrs) if "schema_version" in attrs else ("unset", None)


def _remove(out: Path) -> None:
    """Done markers first (manifest, parts), arrays last: a kill in between leaves arrays without
    markers, which a re-run redoes, never markers without arrays."""
    for name in (layout.MANIFEST_FILE, layout.PARTS_DIR, layout.ARRAYS_DIR):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def prepare(out: Path, attrs: dict, overwrite: bool, note=None) -> bool:
    """Create the arrays for a new store, or check that an existing one was made with the same `attrs`.

    Returns True when a store with these settings was already there (a resume). With `overwrite`, an
    existing store's manifest, parts and arrays are removed first, whatever state they are in. A
    store that never recorded its settings (killed while being created) is created again; done
    markers left beside missing arrays are stale and go with it. `note` gets a line about anything
    removed without being asked. Call it holding the store's writer lock.
    """
    import zarr

    note = note or (lambda _line: None)
    zpath = out / layout.ARRAYS_DIR
    removed = remove_stale_temps(out)
    if removed:
        note(f"removed {removed} unfinished temporary file(s) left by an interrupted run")
    if overwrite:
        _remove(out)
    else:
        state, old = _recorded(zpath)
        done = done_batches(out)
        if state == "set":
            new = _normalise(attrs)
            diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if not diffs:
                return True
            detail = "; ".join(_describe(k, old.get(k), new.get(k)) for k in diffs)
            raise SettingsMismatch(
                f"store {out} was extracted with other settings ({detail}); "
                "use the same options to resume, or --overwrite to start again"
            )
        if zpath.exists() and done:
            raise SettingsMismatch(
                f"store {out} has {len(done)} done batch(es) but {zpath.name} "
                f"{'does not open' if state == 'unreadable' else 'records no settings'}; "
                "use --overwrite to start again"
            )
        if done or (out / layout.MANIFEST_FILE).exists() or zpath.exists():
            note(f"store {out} never finished being created"
                 + (f" ({len(done)} done marker(s) without arrays are stale)" if done else "")
                 + "; starting it again")
        _remove(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / layout.PARTS_DIR).mkdir(exist_ok=True)
    n = attrs["settings"]["num_clips"]
    frames, size = attrs["frames"], attrs["size"]
    group = zarr.open_group(str(zpath), mode="w", zarr_format=3)
    classes = tuple(attrs.get("parsing_classes") or layout.PARSING_CLASSES)
    for spec in layout.ARRAYS:
        group.create_array(
            spec.name, shape=spec.concrete_shape(n, frames, size), chunks=spec.chunk_shape(frames, size),
            dtype=spec.dtype, fill_value=0, compressors=codec_for(spec.dtype),
            dimension_names=spec.dimension_names, attributes=layout.array_attrs(spec, classes),
        )
    # Attributes last: a group with attributes is a fully created store.
    group.attrs.update(_normalise(attrs))
    return False


def remove_stale_temps(out: Path) -> int:
    """Delete the temporary files of writes a killed run never renamed (`write_atomic`'s
    `.NAME.PID.tmp` in parts/ and beside the manifest). Only safe under the writer lock."""
    n = 0
    for folder, pattern in ((out / layout.PARTS_DIR, ".*.tmp"), (out, f".{layout.MANIFEST_FILE}.*.tmp")):
        if folder.is_dir():
            for tmp in folder.glob(pattern):
                tmp.unlink(missing_ok=True)
                n += 1
    return n


def remove_partial_chunks(out: Path, store_indices) -> int:
    """Delete zarr's `*.partial` chunk files (a chunk write cut short by a kill) of the clips about to be
    extracted again; only their chunk folders are looked at, so the cost follows the work left."""
    import zarr

    from fineschema.validate import chunk_file

    group = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    n = 0
    for spec in layout.ARRAYS:
        arr = group[spec.name]
        for i in store_indices:
            folder = chunk_file(out / layout.ARRAYS_DIR, spec.name, arr, i).parent
            if folder.is_dir():
                for partial in folder.glob("*.partial"):
                    partial.unlink(missing_ok=True)
                    n += 1
    return n


def codec_for(dtype: str):
    """Blosc settings per array, chosen on face crops with bench/extract.py (BENCHMARKS.md, extract).

    uint8 images take LZ4 at level 9 without shuffle: it encodes and decodes faster than zstd (the
    trainer reads every clip once per epoch) for a few percent more bytes. float32 arrays (landmarks,
    blendshapes) are small and take byte shuffle, which lines up their exponent bytes, with zstd level 3.
    """
    from zarr.codecs import BloscCodec, BloscShuffle

    if dtype == "float32":
        return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
    return BloscCodec(cname="lz4", clevel=9, shuffle=BloscShuffle.noshuffle)


def _describe(key: str, old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        inner = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return f"{key} ({', '.join(inner)})"
    return f"{key}: {old!r} -> {new!r}"


class ArrayWriter:
    """Opens the store's arrays once per worker and writes whole clips (one chunk each).

    Each write fills a whole chunk, so zarr's check for chunks equal to the fill value (which it
    would then leave unwritten) is switched off: zarr 3.1 compares with `array_equal(...,
    equal_nan=True)`, which costs more than compressing the chunk (BENCHMARKS.md, extract).
    """

    def __init__(self, out: Path):
        import zarr

        group = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r+")
        self.arrays = {spec.name: group[spec.name].with_config({"write_empty_chunks": True})
                       for spec in layout.ARRAYS}

    def write(self, store_index: int, arrays: dict[str, np.ndarray]) -> None:
        for name, arr in self.arrays.items():
            arr[store_index] = arrays[name]


def manifest_row(entry: ClipEntry, label_names: tuple[str, ...], store_index: int, status: str,
                 error: str | None, **extra) -> dict:
    try:
        label_index = labels.index_of(entry.label, label_names) if entry.label else -1
    except labels.LabelError:
        label_index = -1
    row = {
        "clip_id": entry.clip_id, "dataset": entry.dataset, "source_path": entry.source_path,
        "label": entry.label, "label_index": label_index, "compound_label": entry.compound_label,
        "train_folds": list(entry.train_folds), "test_folds": list(entry.test_folds),
        "caption_en": entry.caption_en, "caption_zh": entry.caption_zh,
        "store_index": store_index, "status": status, "error": error,
        "notes": "; ".join(entry.notes) if getattr(entry, "notes", None) else None,
    }
    row.update(extra)
    return row


def rows_table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in tables.MANIFEST}
    return pa.Table.from_pydict(cols, schema=tables.MANIFEST)


def part_name(batch: int) -> str:
    return f"batch-{batch:06d}.parquet"


def done_batches(out: Path) -> set[int]:
    parts = out / layout.PARTS_DIR
    if not parts.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in parts.glob("batch-*.parquet")}


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write to a temporary sibling, flush it to disk, rename it into place (fineschema's one writer)."""
    write_parquet_atomic(table, path)


def write_part(out: Path, name: str, rows: list[dict]) -> None:
    write_atomic(rows_table(rows), out / layout.PARTS_DIR / name)


def compact(out: Path, extra_rows: list[dict] | None = None) -> pa.Table:
    """Union of all parts (plus rows of batches that did not finish), sorted by clip id, as manifest.parquet."""
    parts = sorted((out / layout.PARTS_DIR).glob("*.parquet"))
    pieces = [tables.conform(pq.read_table(p), tables.MANIFEST) for p in parts]
    if extra_rows:
        pieces.append(rows_table(extra_rows))
    table = pa.concat_tables(pieces) if pieces else tables.MANIFEST.empty_table()
    table = table.sort_by([("clip_id", "ascending")])
    write_atomic(table, out / layout.MANIFEST_FILE)
    return table
