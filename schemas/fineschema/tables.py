"""Arrow schemas of every Parquet file in a store or a run.

Both programs write and read through these, so a column that changes here changes for both.
"""

from __future__ import annotations

import pyarrow as pa

from .version import SCHEMA_VERSION

# Per-clip status values written to the manifest.
STATUS_OK = "ok"
STATUS_PENDING = "pending"          # indexed, not yet extracted
STATUS_NO_FACE = "no_face"          # decoded, but no kept frame's face was measured (arrays stored, see frames_input)
STATUS_FEW_FACES = "few_faces"      # the face was measured in too few kept frames (arrays stored)
STATUS_MISSING = "missing"          # listed in a split file, absent on disk
STATUS_CORRUPT = "corrupt"          # zero-byte, truncated or undecodable media
STATUS_BAD_ANNOTATION = "bad_annotation"  # a split line that does not parse
STATUS_OUTSIDE_ROOT = "outside_root"      # a path that resolves outside the dataset root
STATUS_BAD_PATH = "bad_path"        # a file name that cannot be stored (not UTF-8) or resolved (symlink loop)
STATUS_ERROR = "error"              # anything else, with the message
STATUSES = (
    STATUS_OK, STATUS_PENDING, STATUS_NO_FACE, STATUS_FEW_FACES, STATUS_MISSING, STATUS_CORRUPT,
    STATUS_BAD_ANNOTATION, STATUS_OUTSIDE_ROOT, STATUS_BAD_PATH, STATUS_ERROR,
)
# Clips whose arrays are stored: every one of them is trained on and scored, as the official protocols
# score every listed test clip. The others (unreadable, absent, refused) stay unscored, counted by status.
STORED_STATUSES = (STATUS_OK, STATUS_FEW_FACES, STATUS_NO_FACE)

# What a stored clip's `frames` hold (manifest column frames_input).
INPUT_FACE_CROP = "face_crop"          # square crops around the tracked face
INPUT_SOURCE_FRAMES = "source_frames"  # a frame-folder source's own frames (aligned crops), resized
INPUT_WHOLE_FRAME = "whole_frame"      # raw video in which no face was detected: the whole frame, resized
FRAMES_INPUTS = (INPUT_FACE_CROP, INPUT_SOURCE_FRAMES, INPUT_WHOLE_FRAME)

MANIFEST = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),            # relative to the dataset root, POSIX separators
        pa.field("label", pa.string()),                  # canonical name (null when unlabelled)
        pa.field("label_index", pa.int16()),             # index in the store's label set, -1 when unlabelled
        pa.field("compound_label", pa.string()),         # MAFW compound split label, canonical
        pa.field("train_folds", pa.list_(pa.int8())),    # folds whose training set holds this clip (1-based)
        pa.field("test_folds", pa.list_(pa.int8())),     # folds whose test set holds this clip
        pa.field("caption_en", pa.string()),             # MAFW English caption; null where none exists
        pa.field("caption_zh", pa.string()),             # MAFW Chinese caption (decoded from GBK)
        pa.field("num_source_frames", pa.int32()),
        pa.field("fps", pa.float32()),
        pa.field("frame_indices", pa.list_(pa.int32())), # source frame index of each stored frame
        pa.field("face_found_ratio", pa.float32()),
        pa.field("frames_input", pa.string()),           # FRAMES_INPUTS: what the stored frames show; null: none stored
        pa.field("source_width", pa.int32()),            # decoded frame size in pixels (boxes are in these)
        pa.field("source_height", pa.int32()),
        pa.field("store_index", pa.int64()),             # row in the Zarr arrays, -1 when none
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("notes", pa.string()),                  # what the index noticed (label conflict settled, ...)
    ],
    metadata={b"schema_version": str(SCHEMA_VERSION).encode(), b"kind": b"manifest"},
)

DESCRIPTION = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("engine", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt_hash", pa.string(), nullable=False),
        pa.field("raw_text", pa.string()),
        pa.field("refined_text", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("output_tokens", pa.int32()),
        pa.field("random_weights", pa.bool_()),          # true: text from an untrained model, meaningless
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    ],
    metadata={b"schema_version": str(SCHEMA_VERSION).encode(), b"kind": b"descriptions"},
)

METRICS = pa.schema(
    [
        pa.field("run", pa.string(), nullable=False),
        pa.field("fold", pa.int8()),
        pa.field("epoch", pa.int32()),
        pa.field("step", pa.int64()),
        pa.field("split", pa.string(), nullable=False),   # train | val | test
        pa.field("loss", pa.float64()),
        pa.field("uar", pa.float64()),
        pa.field("war", pa.float64()),
        pa.field("lr", pa.float64()),
        pa.field("seconds", pa.float64()),
    ],
    metadata={b"schema_version": str(SCHEMA_VERSION).encode(), b"kind": b"metrics"},
)

PREDICTIONS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("fold", pa.int8()),
        pa.field("true_label", pa.string()),
        pa.field("pred_label", pa.string(), nullable=False),
        pa.field("probs", pa.list_(pa.float32())),          # in the order of the run's label set
    ],
    metadata={b"schema_version": str(SCHEMA_VERSION).encode(), b"kind": b"predictions"},
)

TABLES = {"manifest": MANIFEST, "descriptions": DESCRIPTION, "metrics": METRICS, "predictions": PREDICTIONS}


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder and cast `table` to `schema`, adding absent nullable columns as nulls; keeps schema metadata."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"column {field.name!r} is required by the {schema.metadata[b'kind'].decode()} schema")
    return pa.Table.from_arrays(columns, schema=schema)
