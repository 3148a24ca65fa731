"""Your own clips: any folder of videos and/or frame folders, with an optional CSV of labels.

Every video file (.mp4 .avi .mov .mkv .webm) and every folder that directly holds images is a clip;
`clip_id` is its path relative to the root without the extension. The labels CSV has columns
`path,label` (paths relative to the root, with or without the extension; label names in any
dataset's spelling: `Happy`, `happiness`, `anger_disgust`...), and optionally `split` (`train` or
`test`, giving fold 1). Without a CSV the clips are unlabelled. Symlinks that leave the root are
recorded as `outside_root` and never followed.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from fineschema import labels, tables

from ..entries import ClipEntry
from .common import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    DatasetLayoutError,
    IndexBuilder,
    OutsideRootError,
    check_relative,
    decode_text,
    natural_sorted,
    note_error,
    posix_rel,
    resolve_inside,
)

SOURCES: tuple[str, ...] = ("all", "videos", "frames")


def _scan(root: Path, source: str, builder: IndexBuilder) -> None:
    base = root.resolve()
    want_videos, want_frames = source in ("all", "videos"), source in ("all", "frames")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            link = here / name
            if link.is_symlink() and not link.resolve().is_relative_to(base):
                rel = posix_rel(link, root)
                entry = builder.add(rel, None, "frames", None, fold=None, split=None, where=rel)
                entry.status = tables.STATUS_OUTSIDE_ROOT
                note_error(entry, f"{rel} is a symlink to {link.resolve()}, outside the root {base}; not followed")
        images = [f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTS]
        if want_frames and images and here != root:
            rel = posix_rel(here, root)
            builder.add(rel, rel, "frames", None, fold=None, split=None, where=rel)
        if not want_videos:
            continue
        for name in natural_sorted(filenames):
            if Path(name).suffix.lower() not in VIDEO_EXTS:
                continue
            path = here / name
            rel = posix_rel(path, root)
            clip_id = rel[: -len(path.suffix)]
            if clip_id in builder.entries:
                note_error(builder.entries[clip_id], f"{rel} has the same clip id; ignored")
                continue
            entry = builder.add(clip_id, rel, "video", None, fold=None, split=None, where=rel)
            if path.is_symlink() and not path.resolve().is_relative_to(base):
                entry.status, entry.source_path = tables.STATUS_OUTSIDE_ROOT, None
                note_error(entry, f"{rel} is a symlink to {path.resolve()}, outside the root {base}; not followed")


def _apply_labels(root: Path, labels_csv: Path, builder: IndexBuilder) -> None:
    text = decode_text(Path(labels_csv).read_bytes())
    reader = csv.DictReader(io.StringIO(text.replace("\r\n", "\n")))
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    if "path" not in fields or "label" not in fields:
        raise DatasetLayoutError(f"{labels_csv}: needs a header with columns `path,label` (found {reader.fieldnames})")
    by_path = {e.source_path: e for e in builder.entries.values() if e.source_path}
    for row in reader:
        number = reader.line_num
        where = f"{Path(labels_csv).name}:{number}"
        raw_path = (row.get(fields["path"]) or "").strip().replace("\\", "/").rstrip("/")
        raw_label = (row.get(fields["label"]) or "").strip()
        split = (row.get(fields["split"]) or "").strip().lower() if "split" in fields else ""
        if not raw_path:
            builder.bad(None, where, "empty path")
            continue
        try:
            check_relative(raw_path, root)
            resolve_inside(root, raw_path)
        except OutsideRootError as exc:
            entry = builder.entries.get(raw_path) or builder.add(raw_path, None, "video", None, fold=None,
                                                                 split=None, where=where)
            entry.status, entry.source_path = tables.STATUS_OUTSIDE_ROOT, None
            note_error(entry, f"{where}: {exc}; not followed")
            continue
        suffix = Path(raw_path).suffix.lower()
        clip_id = raw_path[: -len(suffix)] if suffix in VIDEO_EXTS else raw_path
        entry = by_path.get(raw_path) or builder.entries.get(clip_id)
        try:
            label = any_spelling(raw_label) if raw_label else None
            if split not in ("", "train", "test"):
                raise ValueError(f"split {split!r} is neither train nor test")
        except (ValueError, labels.LabelError) as exc:
            builder.bad(clip_id, where, str(exc))
            continue
        if entry is None:
            media = "video" if suffix in VIDEO_EXTS else "frames"
            entry = builder.add(clip_id, raw_path, media, None, fold=None, split=None, where=where)
            entry.status = tables.STATUS_MISSING
            note_error(entry, f"{where}: {raw_path} is listed in the labels CSV but absent under {root}")
        if label is not None and label not in labels.MAFW11:
            entry.compound_label, label = label, None  # a multi-emotion label: no single class
        builder.add(entry.clip_id, entry.source_path, entry.media, label, fold=1 if split else None,
                    split=split or None, where=where)


def any_spelling(raw: str) -> str:
    """Canonical name of a label in any dataset's spelling, case-insensitively (`sad`, `Sad`, `SADNESS`)."""
    text = raw.strip()
    for candidate in (text, text.capitalize()):
        try:
            return labels.canonical_name(candidate, "mafw")
        except labels.LabelError:
            continue
    raise labels.LabelError(f"label {raw!r} is not a DFEW, FERV39k or MAFW class name")


def index(root: Path, source: str | None = None, labels_csv: Path | None = None) -> list[ClipEntry]:
    source = source or SOURCES[0]
    if source not in SOURCES:
        raise DatasetLayoutError(f"unknown folder source {source!r}; choose one of {', '.join(SOURCES)}")
    if not Path(root).is_dir():
        raise DatasetLayoutError(f"{root} is not a folder")
    builder = IndexBuilder("folder", root)
    _scan(Path(root), source, builder)
    if labels_csv is not None:
        _apply_labels(Path(root), Path(labels_csv), builder)
    return builder.finish()
