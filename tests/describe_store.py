"""A tiny store (manifest + arrays.zarr frames) built from crops of skimage's astronaut, for describe tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fineschema import layout, tables
from fineschema.version import SCHEMA_VERSION


def make_store(root: Path, n: int = 6, frames: int = 4, size: int = 32, extra_rows: list[dict] | None = None) -> Path:
    """`n` ok clips of `frames` frames (a pan across the astronaut's face), plus `extra_rows` as given."""
    import zarr
    from skimage.data import astronaut

    img = astronaut()[40:240, 140:340]            # the face region, 200x200
    clips = np.zeros((n, frames, size, size, 3), np.uint8)
    for i in range(n):
        for t in range(frames):
            y, x = 4 * t + i, 6 * t
            crop = img[y:y + 160, x:x + 160]
            clips[i, t] = crop[:: 160 // size, :: 160 // size][:size, :size]
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="w", zarr_format=3)
    for spec in layout.ARRAYS:   # every array of the contract, every clip's chunk stored (describe validates)
        arr = group.create_array(spec.name, shape=spec.concrete_shape(n, frames, size),
                                 chunks=spec.chunk_shape(frames, size), dtype=spec.dtype)
        arr.with_config({"write_empty_chunks": True})[:] = clips if spec.name == "frames" else 0
    group.attrs.update({"schema_version": SCHEMA_VERSION, "dataset": "dfew", "frames": frames, "size": size,
                        "parsing_classes": list(layout.PARSING_CLASSES), "landmark_model_sha256": "0" * 64,
                        "label_set": "dfew", "source": "clip_224x224"})
    rows = [{"clip_id": f"clip{i:03d}", "dataset": "dfew", "label": "happiness", "status": tables.STATUS_OK,
             "store_index": i} for i in range(n)]
    rows += extra_rows or []
    pq.write_table(tables.conform(pa.Table.from_pylist(rows), tables.MANIFEST), root / layout.MANIFEST_FILE)
    return root
