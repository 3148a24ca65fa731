"""Shared pieces of the index readers: safe paths, natural sort, tolerant text reading, entry merging.

Official split files come from many copies of each dataset (CRLF or LF, a UTF-8 BOM, GBK captions,
blank lines at the end), so reading them is done once, here, and every reader gets clean lines
with their 1-based line numbers for error messages.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from fineschema import labels, tables

from ..entries import ClipEntry
from ..errors import FineprepError

log = logging.getLogger("fineprep.datasets")

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class DatasetLayoutError(FineprepError, ValueError):
    """The dataset root lacks what its official layout must have (no split files at all, unknown source)."""


class OutsideRootError(FineprepError, ValueError):
    """A path from an annotation file that would lead outside the dataset root."""


class BadPathError(FineprepError, ValueError):
    """A path that cannot be stored or resolved: a name that is not UTF-8, or a symlink loop."""


def storable_name(text: str) -> str:
    """`text` as a printable string the manifest can hold: bytes that are not UTF-8 (which Python keeps
    as lone surrogates in file names) are written as `\\xNN` escapes."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def is_storable(text: str) -> bool:
    """Whether `text` encodes as UTF-8 (a file name with bytes that are not UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def real_path(path: Path) -> Path:
    """`path.resolve()`, with a symlink loop turned into BadPathError naming the path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:
        raise BadPathError(f"{storable_name(str(path))} cannot be resolved (a symlink loop?): {exc}") from None


# --------------------------------------------------------------------------------------------- paths
def resolve_inside(root: str | Path, rel: str | os.PathLike) -> Path:
    """Resolve `rel` against `root`, refusing absolute paths, `..` escapes and symlinks leaving the root.

    The check runs on the real path (symlinks resolved without reading the target), so a link that
    points elsewhere is refused before anything opens it.
    """
    text = os.fspath(rel).replace("\\", "/")
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise OutsideRootError(f"path {text!r} is absolute or empty; annotation paths must be relative to {root}")
    base = Path(root).resolve()
    target = real_path(base / text)
    if not target.is_relative_to(base):
        raise OutsideRootError(f"path {text!r} resolves to {target}, outside the dataset root {base}")
    return target


def check_relative(text: str, root: str | Path) -> None:
    """Refuse an annotated path fragment that is absolute or climbs with `..`, before it is joined to anything."""
    norm = text.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in norm.split("/"):
        raise OutsideRootError(f"annotated path {text!r} is absolute or climbs with '..'; it would leave {root}")


def posix_rel(path: Path, root: Path) -> str:
    return PurePosixPath(*Path(path).relative_to(root).parts).as_posix()


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value (`x_2.jpg` before `x_10.jpg`)."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p) for p in parts if p != "")


def natural_sorted(items, key=lambda x: x):
    return sorted(items, key=lambda x: natural_key(str(key(x))))


def list_frames(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, in natural order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
    return natural_sorted(files, key=lambda p: p.name)


def frame_files(root: str | Path, entry: ClipEntry) -> list[Path]:
    """The frame images of a `frames` entry, naturally sorted; each must stay inside the root."""
    if entry.media != "frames":
        raise ValueError(f"clip {entry.clip_id}: media is {entry.media!r}, not a frame folder")
    if entry.source_path is None:
        raise ValueError(f"clip {entry.clip_id}: no source path ({entry.status}: {entry.error})")
    folder = resolve_inside(root, entry.source_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"clip {entry.clip_id}: frame folder {entry.source_path} is missing under {root}")
    files = list_frames(folder)
    base = Path(root).resolve()
    for f in files:
        if not real_path(f).is_relative_to(base):
            raise OutsideRootError(f"clip {entry.clip_id}: frame {f.name} links outside the dataset root {base}")
    return files


# ---------------------------------------------------------------------------------------------- text
def decode_text(data: bytes, encodings: tuple[str, ...] = ("utf-8", "gbk")) -> str:
    """Decode with the first encoding that fits; a UTF-8 BOM is dropped.

    GBK bytes of Chinese text are almost never valid UTF-8, so trying UTF-8 first reads both
    re-encoded copies and MAFW's original GBK caption files correctly.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode(encodings[0], errors="replace")


def read_lines(path: Path, encodings: tuple[str, ...] = ("utf-8", "gbk")) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without CR/LF) for every non-blank line of a text file."""
    text = decode_text(path.read_bytes(), encodings)
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def canonical_label(raw: str, dataset: str, allowed: tuple[str, ...] | None = None) -> str:
    """Canonical label name, or LabelError when it is not a class of `dataset` (or not in `allowed`)."""
    name = labels.canonical_name(raw, dataset)
    if allowed is not None and name not in allowed:
        raise labels.LabelError(f"label {raw!r} is not one of the {dataset} classes")
    return name


# ------------------------------------------------------------------------------------------- merging
FLAG_LABEL_CONFLICT = "label_conflict"
FLAG_OVERLAP = "train_test_overlap"
FLAG_BAD_LINE = "bad_line_elsewhere"


class IndexBuilder:
    """Collects split-file lines into one entry per clip, with every fold it belongs to.

    Every label a clip is given is counted. In `finish`, a clip whose files disagree takes the label
    most of them give (noted on the clip); a tie, or any disagreement with `strict`, refuses the clip
    as `bad_annotation`. A clip listed in both the train and the test set of one fold is dropped from
    that fold's train side (noted), or refused with `strict`: training must never see a test clip.
    Lines that do not parse become `bad_annotation` rows, unless the same clip parsed fine elsewhere,
    in which case the bad line is noted on that clip.
    """

    def __init__(self, dataset: str, root: Path, strict: bool = False):
        self.dataset = dataset
        self.root = Path(root)
        self.strict = strict
        self.entries: dict[str, ClipEntry] = {}
        self._votes: dict[str, list[tuple[str, str]]] = {}
        self._bad: dict[str, list[str]] = {}

    def where(self, path: Path, line: int) -> str:
        try:
            rel = posix_rel(path, self.root)
        except ValueError:
            rel = str(path)
        return f"{rel}:{line}"

    def add(self, clip_id: str, source_path: str | None, media: str, label: str | None, *,
            fold: int | None, split: str | None, where: str) -> ClipEntry:
        entry = self.entries.get(clip_id)
        if entry is None:
            entry = ClipEntry(clip_id=clip_id, dataset=self.dataset, source_path=source_path, media=media,
                              label=label)
            self.entries[clip_id] = entry
        elif entry.label is None and label is not None:
            entry.label = label
        if label is not None:
            self._votes.setdefault(clip_id, []).append((label, where))
        if fold is not None and split is not None:
            folds = entry.train_folds if split == "train" else entry.test_folds
            if fold not in folds:
                folds.append(fold)
                folds.sort()
        return entry

    def bad(self, clip_id: str | None, where: str, reason: str) -> None:
        key = clip_id or where
        self._bad.setdefault(key, []).append(f"{where}: {reason}")

    def _settle_label(self, entry: ClipEntry) -> None:
        votes = self._votes.get(entry.clip_id, [])
        counts: dict[str, list[str]] = {}
        for label, where in votes:
            counts.setdefault(label, []).append(where)
        if len(counts) < 2:
            return
        ranked = sorted(counts.items(), key=lambda kv: -len(kv[1]))
        detail = ", ".join(f"{label!r} {len(w)}x ({', '.join(w[:3])}{', ...' if len(w) > 3 else ''})"
                           for label, w in ranked)
        tie = len(ranked[1][1]) == len(ranked[0][1])
        if self.strict or tie:
            why = "--strict refuses any disagreement" if self.strict and not tie else "no majority"
            entry.label = None
            if entry.status == tables.STATUS_PENDING:
                entry.status = tables.STATUS_BAD_ANNOTATION
                note_error(entry, f"label conflict: {detail}; {why}, clip refused (fix the split files)")
            entry.note(f"label conflict: {detail}; {why}", FLAG_LABEL_CONFLICT)
            return
        entry.label = ranked[0][0]
        entry.note(f"label conflict: {detail}; majority {entry.label!r} kept", FLAG_LABEL_CONFLICT)

    def _settle_overlap(self, entry: ClipEntry) -> None:
        both = sorted(set(entry.train_folds) & set(entry.test_folds))
        if not both:
            return
        folds = ", ".join(map(str, both))
        if self.strict:
            if entry.status == tables.STATUS_PENDING:
                entry.status = tables.STATUS_BAD_ANNOTATION
                note_error(entry, f"listed in both train and test of fold {folds}; --strict refuses the clip")
            entry.note(f"in both train and test of fold {folds}; refused (--strict)", FLAG_OVERLAP)
            return
        entry.train_folds = [f for f in entry.train_folds if f not in both]
        entry.note(f"in both train and test of fold {folds}; dropped from the train side there", FLAG_OVERLAP)

    def finish(self, check_media=None) -> list[ClipEntry]:
        """Settle labels and fold overlaps, check media on disk for every usable clip, add bad-annotation
        rows; return the entries in natural order."""
        for entry in self.entries.values():
            self._settle_label(entry)
            self._settle_overlap(entry)
        for entry in self.entries.values():
            if entry.status == tables.STATUS_PENDING and check_media is not None:
                check_media(entry)
        for key, reasons in self._bad.items():
            text = "; ".join(reasons)
            if key in self.entries:
                self.entries[key].note("bad line also found: " + text, FLAG_BAD_LINE)
            else:
                self.entries[key] = ClipEntry(clip_id=key, dataset=self.dataset, source_path=None,
                                              status=tables.STATUS_BAD_ANNOTATION, error=text)
        return natural_sorted(self.entries.values(), key=lambda e: e.clip_id)


def note_error(entry: ClipEntry, message: str) -> None:
    """Add to the reason of a clip's (non-ok) status."""
    entry.error = message if not entry.error else f"{entry.error}; {message}"


def locate(entry: ClipEntry, root: Path, candidates: list[str], annotated: str | None = None) -> None:
    """Point `entry` at the first candidate path that exists, or mark it missing / outside the root.

    Candidates are alternatives for the same clip (padded or unpadded id, other video extensions);
    the first is the documented one and is kept as `source_path` when none exists. `annotated` is the
    fragment taken from an annotation file, refused outright when absolute or climbing with `..`.
    """
    if annotated is not None:
        try:
            check_relative(annotated, root)
        except OutsideRootError as exc:
            entry.status, entry.source_path = tables.STATUS_OUTSIDE_ROOT, None
            note_error(entry, f"{exc}; not followed")
            return
    escapes: list[str] = []
    for rel in candidates:
        try:
            path = resolve_inside(root, rel)
        except OutsideRootError as exc:
            escapes.append(str(exc))
            continue
        except BadPathError as exc:
            entry.status, entry.source_path = tables.STATUS_BAD_PATH, None
            note_error(entry, f"{exc}; fix or remove the link")
            return
        exists = path.is_dir() if entry.media == "frames" else path.is_file()
        if exists:
            entry.source_path = rel
            return
    if escapes:  # a candidate exists only through a path that leaves the root: refused, not missing
        entry.status = tables.STATUS_OUTSIDE_ROOT
        note_error(entry, escapes[0] + "; not followed")
        entry.source_path = None
        return
    entry.source_path = candidates[0]
    entry.status = tables.STATUS_MISSING
    kind = "frame folder" if entry.media == "frames" else "video"
    note_error(entry, f"listed in the splits but the {kind} {candidates[0]} is absent under {root}")
