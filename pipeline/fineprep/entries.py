"""What an index reader hands to the extractor: one entry per clip, before any media is touched."""

from __future__ import annotations

from dataclasses import dataclass, field

from fineschema import tables


@dataclass
class ClipEntry:
    """One clip as the dataset's official files describe it.

    `source_path` is relative to the dataset root (POSIX separators). `media` says how to read it:
    `video` (a video file) or `frames` (a folder of image files, sorted by name).
    A clip whose annotation was bad, whose path escapes the root, or whose media is absent keeps its
    row with `status` and `error` set, so nothing listed in a split is silently dropped. What the
    index noticed about a usable clip (a label conflict it settled, a bad line elsewhere, a fold it
    was dropped from) goes into `notes`, which the manifest keeps whatever the clip's status.
    `flags` name the kinds of notes (`label_conflict`, `train_test_overlap`, ...) for the summary
    counts an extract prints; they are not stored.
    """

    clip_id: str
    dataset: str
    source_path: str | None
    media: str = "video"
    label: str | None = None
    compound_label: str | None = None
    train_folds: list[int] = field(default_factory=list)
    test_folds: list[int] = field(default_factory=list)
    caption_en: str | None = None
    caption_zh: str | None = None
    status: str = tables.STATUS_PENDING
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)

    def note(self, message: str, flag: str | None = None) -> None:
        self.notes.append(message)
        if flag:
            self.flags.add(flag)

    @property
    def notes_text(self) -> str | None:
        """The notes as the manifest's one `notes` string (null when there are none)."""
        return "; ".join(self.notes) if self.notes else None

    @property
    def usable(self) -> bool:
        return self.status == tables.STATUS_PENDING
