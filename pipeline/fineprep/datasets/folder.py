"""Your own clips: any folder of videos and/or frame folders, with an optional CSV of labels.

Every video file (.mp4 .avi .mov .mkv .webm) and every folder that directly holds images is a clip;
`clip_id` is its path relative to the root without the extension. The labels CSV has columns
`path,label` (paths relative to the root, with or without the extension; label names in any
dataset's spelling: `Happy`, `happiness`, `anger_disgust`...), and optionally `split` (`train` or
`test`, giving fold 1). Without a CSV the clips are unlabelled. Symlinks that leave the root are
recorded as `outside_root` and never followed; names that are not UTF-8 and symlink loops are
recorded as `bad_path` (with the name's undecodable bytes escaped as `\\xNN`), so one bad file name
never stops the job.
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
    BadPathError,
    DatasetLayoutError,
    IndexBuilder,
    OutsideRootError,
    check_relative,
    decode_text,
    is_storable,
    natural_sorted,
    note_error,
    posix_rel,
    real_path,
    resolve_inside,
    storable_name,
)

SOURCES: tuple[str, ...] = ("all", "videos", "frames")


def _unusable_path(builder: IndexBuilder, rel: str, media: str, base: Path, path: Path) -> bool:
    """Record `rel` as a `bad_path` or `outside_root` row when it cannot be extracted; True when it was.

    A name that is not UTF-8 cannot go into the manifest (its id is stored with `\\xNN` escapes); a
    symlink loop cannot be opened; a symlink out of the root is never followed.
    """
    if not is_storable(rel):
        clip_id, name = storable_name(_clip_id(rel, media)), storable_name(rel)
        entry = builder.add(clip_id, None, media, None, fold=None, split=None, where=name)
        entry.status, entry.source_path = tables.STATUS_BAD_PATH, None
        note_error(entry, f"the name {name!r} is not valid UTF-8 and cannot be stored; rename it "
                          "(e.g. `convmv -f latin1 -t utf8`) to extract it")
        return True
    if not path.is_symlink():
        return False
    try:
        target = real_path(path)
    except BadPathError as exc:
        entry = builder.add(_clip_id(rel, media), None, media, None, fold=None, split=None, where=rel)
        entry.status, entry.source_path = tables.STATUS_BAD_PATH, None
        note_error(entry, f"{exc}; fix or remove the link")
        return True
    if not target.is_relative_to(base):
        entry = builder.add(_clip_id(rel, media), None, media, None, fold=None, split=None, where=rel)
        entry.status, entry.source_path = tables.STATUS_OUTSIDE_ROOT, None
        note_error(entry, f"{rel} is a symlink to {target}, outside the root {base}; not followed")
        return True
    return False


def _clip_id(rel: str, media: str) -> str:
    suffix = Path(rel).suffix
    return rel[: -len(suffix)] if media == "video" and suffix.lower() in VIDEO_EXTS else rel


def _scan(root: Path, source: str, builder: IndexBuilder) -> None:
    base = root.resolve()
    want_videos, want_frames = source in ("all", "videos"), source in ("all", "frames")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        for name in list(dirnames):
            link = here / name
            if link.is_symlink():
                _unusable_path(builder, posix_rel(link, root), "frames", base, link)
        images = [f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTS]
        if want_frames and images and here != root:
            rel = posix_rel(here, root)
            if not _unusable_path(builder, rel, "frames", base, here):
                builder.add(rel, rel, "frames", None, fold=None, split=None, where=rel)
        if not want_videos:
            continue
        for name in natural_sorted(filenames):
            if Path(name).suffix.lower() not in VIDEO_EXTS:
                continue
            path = here / name
            rel = posix_rel(path, root)
            if _unusable_path(builder, rel, "video", base, path):
                continue
            clip_id = _clip_id(rel, "video")
            if clip_id in builder.entries:
                builder.entries[clip_id].note(f"{rel} has the same clip id; ignored", "duplicate_id")
                continue
            builder.add(clip_id, rel, "video", None, fold=None, split=None, where=rel)


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


def index(root: Path, source: str | None = None, labels_csv: Path | None = None,
          strict: bool = False) -> list[ClipEntry]:
    source = source or SOURCES[0]
    if source not in SOURCES:
        raise DatasetLayoutError(f"unknown folder source {source!r}; choose one of {', '.join(SOURCES)}")
    if not Path(root).is_dir():
        raise DatasetLayoutError(f"{root} is not a folder")
    builder = IndexBuilder("folder", root, strict=strict)
    _scan(Path(root), source, builder)
    if labels_csv is not None:
        _apply_labels(Path(root), Path(labels_csv), builder)
    return builder.finish()
