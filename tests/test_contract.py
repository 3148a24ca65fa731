"""Store contract: schema round trips, and stores that break it refused with a message naming the problem."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from fineschema import SCHEMA_VERSION, StoreError, check_store, layout, tables, validate_store


def _manifest(n: int) -> pa.Table:
    rows = {
        "clip_id": [f"{i:05d}" for i in range(n)],
        "dataset": ["dfew"] * n,
        "source_path": [f"Clip/clip_224x224/{i:05d}" for i in range(n)],
        "label": ["happiness"] * n,
        "label_index": [0] * n,
        "train_folds": [[2, 3, 4, 5]] * n,
        "test_folds": [[1]] * n,
        "frame_indices": [list(range(4))] * n,
        "store_index": list(range(n)),
        "status": [tables.STATUS_OK] * n,
    }
    return tables.conform(pa.table(rows), tables.MANIFEST)


def make_store(root: Path, n: int = 3, frames: int = 4, size: int = 8, version: int = SCHEMA_VERSION) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(_manifest(n), root / layout.MANIFEST_FILE)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="w", zarr_format=3)
    for spec in layout.ARRAYS:   # every ok clip's chunks stored: the contract checks they are there
        arr = group.create_array(spec.name, shape=spec.concrete_shape(n, frames, size),
                                 chunks=spec.chunk_shape(frames, size), dtype=spec.dtype)
        arr.with_config({"write_empty_chunks": True})[:] = 0
    group.attrs.update({
        "schema_version": version, "dataset": "dfew", "frames": frames, "size": size,
        "parsing_classes": list(layout.PARSING_CLASSES), "landmark_model_sha256": "0" * 64,
        "label_set": "dfew", "source": "clip_224x224",
    })
    return root


def test_conform_fills_nullable_and_keeps_metadata():
    t = _manifest(2)
    assert t.schema.equals(tables.MANIFEST, check_metadata=True)
    assert t.column("caption_en").null_count == 2
    with pytest.raises(ValueError, match="status"):
        tables.conform(pa.table({"clip_id": ["a"], "dataset": ["dfew"]}), tables.MANIFEST)


def test_parquet_roundtrip(tmp_path):
    for name, schema in tables.TABLES.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(schema.empty_table(), path)
        back = pq.read_schema(path)
        assert back.equals(schema, check_metadata=False), name
        assert back.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()


def test_valid_store_passes(tmp_path):
    root = make_store(tmp_path / "s")
    assert validate_store(root) == []
    check_store(root)


def test_newer_version_refused(tmp_path):
    root = make_store(tmp_path / "s", version=SCHEMA_VERSION + 1)
    problems = validate_store(root)
    assert any("newer than this fineclip" in p and "upgrade" in p for p in problems)
    with pytest.raises(StoreError, match="schema version"):
        check_store(root)


def test_missing_array_and_attr_named(tmp_path):
    root = make_store(tmp_path / "s")
    import shutil

    shutil.rmtree(root / layout.ARRAYS_DIR / "blendshapes")
    meta = root / layout.ARRAYS_DIR / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"]["landmark_model_sha256"]
    meta.write_text(json.dumps(doc))
    problems = validate_store(root)
    assert any("'blendshapes' is missing" in p for p in problems)
    assert any("'landmark_model_sha256' is missing" in p for p in problems)


def test_wrong_manifest_column_named(tmp_path):
    root = make_store(tmp_path / "s")
    t = pq.read_table(root / layout.MANIFEST_FILE).drop(["status"])
    t = t.append_column("status", pa.array([1, 2, 3]))
    pq.write_table(t, root / layout.MANIFEST_FILE)
    problems = validate_store(root)
    assert problems == [f"{layout.MANIFEST_FILE}: column 'status' is int64, expected string"]


def test_store_index_out_of_range(tmp_path):
    root = make_store(tmp_path / "s", n=2)
    t = pq.read_table(root / layout.MANIFEST_FILE)
    t = t.set_column(t.schema.get_field_index("store_index"), "store_index", pa.array([0, 7], pa.int64()))
    pq.write_table(t, root / layout.MANIFEST_FILE)
    assert any("point outside the arrays" in p for p in validate_store(root))


def test_wrong_shape_named(tmp_path):
    root = make_store(tmp_path / "s")
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="a")
    del group["face_found"]
    group.create_array("face_found", shape=(3, 5), dtype="bool")
    assert any("face_found: shape (3, 5), expected (3, 4)" in p for p in validate_store(root))


def test_no_store(tmp_path):
    assert "no store here" in validate_store(tmp_path / "absent")[0]


def test_layout_chunks_are_one_clip():
    for spec in layout.ARRAYS:
        assert spec.chunk_shape(16, 224)[0] == 1
        assert spec.concrete_shape(5, 16, 224)[1] == 16
    assert np.dtype(layout.ARRAY_SPECS["frames"].dtype) == np.uint8
