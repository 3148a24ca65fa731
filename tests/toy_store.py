"""A small store with class-dependent visual patterns, written straight through the contract.

For the trainer's tests and `bench/loader.py` (which puts tests/ on its path); the trainer itself
never imports it. Each class has its own colour patch (moving across the frames), its own landmark
cluster and its own blendshape profile, on a noisy background, so a model that learns anything beats
chance quickly. Real data comes from `fineprep extract`; this is the trainer's fast fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from fineschema import SCHEMA_VERSION, layout, tables, write_parquet_atomic
from fineschema.labels import LABEL_SETS

HUES = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230], [230, 230, 40], [230, 40, 230], [40, 230, 230],
                 [250, 250, 250], [120, 60, 0], [0, 120, 60], [60, 0, 120], [128, 128, 128]])
WORDS = ["raised", "lowered", "wide", "narrow", "open", "closed", "tense", "relaxed", "bright", "dim", "soft"]


def write_toy_store(root: str | Path, clips_per_class: int = 6, frames: int = 4, size: int = 32,
                    label_set: str = "dfew", folds: int = 2, seed: int = 0, descriptions: bool = False,
                    version: int = SCHEMA_VERSION) -> Path:
    """Write STORE/manifest.parquet and STORE/arrays.zarr (and descriptions/ when asked); return root."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels = LABEL_SETS[label_set]
    rng = np.random.default_rng(seed)
    n = clips_per_class * len(labels)
    cls = np.repeat(np.arange(len(labels)), clips_per_class)
    rng.shuffle(cls)
    _write_arrays(root, cls, frames, size, rng)
    _write_attrs(root, label_set, frames, size, version)
    ids = [f"toy{i:05d}" for i in range(n)]
    _write_manifest(root, ids, cls, labels, label_set, frames, size, folds)
    if descriptions:
        _write_descriptions(root, ids, cls)
    return root


def _write_arrays(root: Path, cls: np.ndarray, frames: int, size: int, rng: np.random.Generator) -> None:
    """Every array of the layout, clip by clip: a class-coloured patch drifting over noise, its parsing
    class, a class-placed landmark cluster and one raised blendshape per class."""
    import zarr

    n = len(cls)
    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="w", zarr_format=3)
    arrays = {spec.name: group.create_array(spec.name, shape=spec.concrete_shape(n, frames, size),
                                            chunks=spec.chunk_shape(frames, size), dtype=spec.dtype,
                                            dimension_names=spec.dimension_names,
                                            attributes=layout.array_attrs(spec)
                                            ).with_config({"write_empty_chunks": True})  # all-zero shots too
              for spec in layout.ARRAYS}
    patch = max(4, size // 2)
    for i in range(n):
        c = int(cls[i])
        img = rng.integers(40, 120, size=(frames, size, size, 3)).astype(np.uint8)
        pars = np.zeros((frames, size, size), np.uint8)
        x0, y0 = rng.integers(0, size - patch, size=2)
        dx = int(rng.integers(-2, 3))
        for t in range(frames):
            x = int(np.clip(x0 + dx * t, 0, size - patch))
            img[t, y0:y0 + patch, x:x + patch] = HUES[c % len(HUES)]
            pars[t, y0:y0 + patch, x:x + patch] = 1 + c % (len(layout.PARSING_CLASSES) - 1)
        centre = np.array([0.2 + 0.6 * (c % 4) / 3, 0.2 + 0.6 * (c // 4) / 2])
        lm = np.clip(centre + 0.08 * rng.standard_normal((frames, layout.NUM_LANDMARKS, 2)), 0, 1)
        lmz = np.concatenate([lm, np.zeros((frames, layout.NUM_LANDMARKS, 1))], axis=-1).astype(np.float32)
        bs = (0.1 * rng.random((frames, layout.NUM_BLENDSHAPES))).astype(np.float32)
        bs[:, (3 * c) % layout.NUM_BLENDSHAPES] += 0.8
        arrays["frames"][i] = img
        arrays["parsing"][i] = pars
        arrays["landmarks"][i] = lmz
        arrays["blendshapes"][i] = bs
        arrays["face_found"][i] = np.ones(frames, bool)
        arrays["landmark_score"][i] = np.ones(frames, np.float32)
        arrays["boxes"][i] = np.tile(np.array([0, 0, size, size], np.float32), (frames, 1))  # frames as they are
        arrays["shot"][i] = np.zeros(frames, np.int16)
        arrays["track_score"][i] = np.full(frames, np.nan, np.float32)  # no detector track placed them


def _write_attrs(root: Path, label_set: str, frames: int, size: int, version: int) -> None:
    import zarr

    zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r+").attrs.update({
        "schema_version": version, "dataset": label_set, "frames": frames, "size": size,
        "parsing_classes": list(layout.PARSING_CLASSES), "landmark_model_sha256": "0" * 64,
        "label_set": label_set, "source": "toy",
    })


def _write_manifest(root: Path, ids: list[str], cls: np.ndarray, labels, label_set: str, frames: int, size: int,
                    folds: int) -> None:
    """Fold k tests on clips with i % folds == k - 1 and trains on the rest."""
    n = len(ids)
    test = [[int(i % folds) + 1] for i in range(n)]
    train = [[k for k in range(1, folds + 1) if k != t[0]] for t in test]
    manifest = tables.conform(pa.table({
        "clip_id": ids, "dataset": [label_set] * n, "source_path": [f"toy/{x}.mp4" for x in ids],
        "label": [labels[c] for c in cls], "label_index": cls.astype(np.int16),
        "train_folds": pa.array(train, pa.list_(pa.int8())), "test_folds": pa.array(test, pa.list_(pa.int8())),
        "frame_indices": [list(range(frames))] * n, "store_index": np.arange(n), "status": [tables.STATUS_OK] * n,
        "source_width": np.full(n, size, np.int32), "source_height": np.full(n, size, np.int32),
    }), tables.MANIFEST)
    write_parquet_atomic(manifest, root / layout.MANIFEST_FILE)


def _write_descriptions(root: Path, ids: list[str], cls: np.ndarray) -> None:
    """One description per clip from the "toy" model, two class-dependent words."""
    n = len(ids)
    folder = root / layout.DESCRIPTIONS_DIR
    folder.mkdir(exist_ok=True)
    text = [f"the face looks {WORDS[c % len(WORDS)]} and {WORDS[(c + 3) % len(WORDS)]}" for c in cls]
    desc = tables.conform(pa.table({
        "clip_id": ids, "model": ["toy"] * n, "engine": ["toy"] * n, "prompt_id": ["toy"] * n,
        "prompt_hash": ["0" * 64] * n, "raw_text": text, "refined_text": text, "status": ["ok"] * n,
    }), tables.DESCRIPTION)
    write_parquet_atomic(desc, folder / "part-00000.parquet")
