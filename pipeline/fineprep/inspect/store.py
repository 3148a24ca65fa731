"""Read-only access to a finished store: manifest rows, one clip's arrays, the latest descriptions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fineschema import (
    check_store,
    choose_descriptions,
    description_sets,
    layout,
    read_descriptions,
    read_manifest,
    tables,
)

from ..errors import FineprepError


class InspectError(FineprepError, ValueError):
    """A request the store cannot answer (unknown clip, clip without data); the message says what to do."""


@dataclass
class StoreView:
    root: Path
    rows: list[dict]
    attrs: dict
    _group: object = field(default=None, repr=False)
    _by_id: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def group(self):
        if self._group is None:
            import zarr

            self._group = zarr.open_group(str(self.root / layout.ARRAYS_DIR), mode="r")
        return self._group

    def row(self, clip_id: str) -> dict:
        if not self._by_id:
            self._by_id = {r["clip_id"]: r for r in self.rows}
        try:
            return self._by_id[clip_id]
        except KeyError:
            examples = ", ".join(r["clip_id"] for r in self.rows[:3])
            raise InspectError(
                f"clip {clip_id!r} is not in the store {self.root} ({len(self.rows)} clips, e.g. {examples})"
            ) from None

    def ok_row(self, clip_id: str) -> dict:
        row = self.row(clip_id)
        if row["status"] not in tables.STORED_STATUSES or row["store_index"] is None or row["store_index"] < 0:
            reason = f": {row['error']}" if row.get("error") else ""
            raise InspectError(
                f"clip {clip_id!r} has status {row['status']!r}{reason}; it has no stored frames to show "
                "(pick a clip with status ok, few_faces or no_face, see `fineprep stats`)"
            )
        return row

    def arrays(self, row: dict, names=("frames", "parsing", "landmarks", "face_found")) -> dict[str, np.ndarray]:
        """The named arrays of one clip (one chunk each)."""
        i = int(row["store_index"])
        return {name: np.asarray(self.group[name][i]) for name in names}

    def ok_rows(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == tables.STATUS_OK]

    def latest_descriptions(self) -> dict[str, dict]:
        """clip id -> its description row from the newest (model, prompt) set (fineschema's choice; sets of
        random-weight models only when there is no other). Each row names its model and prompt, and
        `sets` says how many sets the store holds, so a reader can say which one it shows."""
        rows, chosen = choose_descriptions(self.root, newest=True)
        if chosen is None:
            rows, chosen = choose_descriptions(self.root, newest=True, random_weights=True)
        if chosen is not None:
            count = len(description_sets(read_descriptions(self.root, include_random=True)))
            rows = {clip: {**row, "sets": count} for clip, row in rows.items()}
        return rows

    def arrays_bytes(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root / layout.ARRAYS_DIR):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
        return total


def open_store(path: str | Path) -> StoreView:
    """Validate the store against the contract, then read its manifest and attributes."""
    root = Path(path)
    check_store(root)
    import zarr

    group = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r")
    rows = read_manifest(root).to_pylist()
    return StoreView(root=root, rows=rows, attrs=dict(group.attrs), _group=group)


def description_text(row: dict | None) -> str | None:
    if not row:
        return None
    text = row.get("refined_text") or row.get("raw_text")
    tag = f"[{row.get('model')}, prompt {row.get('prompt_id')}"
    if (row.get("sets") or 1) > 1:
        tag += f", the newest of {row['sets']} description sets"
    tag += (", random weights: meaningless text" if row.get("random_weights") else "") + "]"
    return f"{text} {tag}"
