"""Index readers: a dataset in its official layout -> one `ClipEntry` per clip, nothing decoded yet.

    from fineprep.datasets import index_dataset, frame_files
    entries = index_dataset("dfew", Path("/data/DFEW"), source="clip_224x224")

Each clip appears once, with every fold whose train or test set lists it. Problems stay visible as
rows: `missing` (listed, absent on disk), `bad_annotation` (a line that does not parse, with
file:line), `outside_root` (a path that would leave the root; never followed).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..entries import ClipEntry
from . import dfew, ferv39k, folder, mafw
from .common import (
    FLAG_BAD_LINE,
    FLAG_LABEL_CONFLICT,
    FLAG_OVERLAP,
    IMAGE_EXTS,
    VIDEO_EXTS,
    DatasetLayoutError,
    OutsideRootError,
    frame_files,
    natural_key,
    natural_sorted,
    resolve_inside,
)

# Sources each dataset can be read from; the first is the default. MAFW also takes `frames:<dir>`.
SOURCES: dict[str, tuple[str, ...]] = {
    "dfew": dfew.SOURCES,
    "ferv39k": ferv39k.SOURCES,
    "mafw": mafw.SOURCES,
    "folder": folder.SOURCES,
}

# The fineschema label set each dataset's labels belong to (a folder may use any of MAFW's 11 classes).
LABEL_SET: dict[str, str] = {"dfew": "dfew", "ferv39k": "ferv39k", "mafw": "mafw", "folder": "mafw"}

_READERS = {"dfew": dfew.index, "ferv39k": ferv39k.index, "mafw": mafw.index}


def index_dataset(dataset: str, root: Path, source: str | None = None,
                  labels_csv: Path | None = None, strict: bool = False) -> list[ClipEntry]:
    """Read a dataset's split files (or scan a folder) into clip entries, in natural clip-id order.

    Label conflicts between split files go to the majority (a tie refuses the clip); a clip in both
    the train and test set of one fold leaves that fold's train side. `strict` refuses both instead.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset root {root} does not exist or is not a folder")
    if dataset == "folder":
        return folder.index(root, source, labels_csv, strict=strict)
    if labels_csv is not None:
        raise DatasetLayoutError(f"--labels is for `folder` datasets; {dataset} labels come from its split files")
    try:
        reader = _READERS[dataset]
    except KeyError:
        raise DatasetLayoutError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}") from None
    return reader(root, source, strict=strict)


INDEX_FLAGS = {
    FLAG_LABEL_CONFLICT: "with a label conflict between split files (majority kept, or refused)",
    FLAG_OVERLAP: "in both the train and the test list of a fold (dropped from that train side, or refused)",
    FLAG_BAD_LINE: "with a bad line elsewhere in the split files",
}


def index_report(entries: list[ClipEntry]) -> list[str]:
    """One line per kind of index note with its clip count, for the extract's console; every note
    itself is in the clip's `notes` column."""
    counts = Counter(flag for e in entries for flag in e.flags)
    return [f"index: {counts[flag]} clip(s) {text}; see the manifest's notes column"
            for flag, text in INDEX_FLAGS.items() if counts.get(flag)]


__all__ = [
    "IMAGE_EXTS", "LABEL_SET", "SOURCES", "VIDEO_EXTS", "ClipEntry", "DatasetLayoutError", "OutsideRootError",
    "frame_files", "index_dataset", "index_report", "natural_key", "natural_sorted", "resolve_inside",
]
