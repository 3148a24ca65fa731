"""Ground truth of an in-the-wild synthetic dataset, and the scores a face stage gets against it.

`ground_truth.parquet` at the dataset root has one row per clip and source frame:

| column | type | meaning |
|---|---|---|
| clip_id | string | the dataset's own clip id |
| path | string | the video, relative to the root (the manifest's `source_path` for video sources) |
| frame | int32 | source frame index, 0-based, as decoded |
| shot | int16 | shot index inside the clip, 0-based |
| cut | bool | a new shot starts at this frame (never true on frame 0) |
| width, height | int32 | frame size in pixels |
| label | string | the clip's class (canonical name) |
| primary | string | identity of the primary person: the one whose face carries the class dynamics, |
| | | placed as the largest and most central face of every shot and present in every frame |
| x0, y0, x1, y1 | float32 | the primary face's box (extent of its 468-point mesh) in source pixels; null when absent |
| face_px | float32 | that box's height in pixels (null when absent) |
| turned_away | bool | the primary shows the back of the head: box kept (where the head is), no face visible |
| identities | list<string> | everyone whose head is in the frame, back to front (primary last) |
| others | list<struct> | the other people's face boxes: identity, x0, y0, x1, y1 (may reach outside the frame) |
| conditions | string | the shot's degradations joined by `+` (dark, low_contrast, blur, compressed) or `clean` |

`score_clip` compares one extracted clip with it: a kept frame counts as *eligible* when the primary
face is present, at least `min_face` px high and not turned away, and as a *hit* when the landmarker
found a face there and the crop window's centre lies inside the true box. An identity switch is a
change of the person under the window centre between consecutive kept frames of one true shot.
`unmeasured_frames` counts frames whose stored values were not measured on that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fineschema import write_parquet_atomic

GROUND_TRUTH = "ground_truth.parquet"
MIN_FACE_PX = 40.0

_BOX = pa.struct([("identity", pa.string()), ("x0", pa.float32()), ("y0", pa.float32()),
                  ("x1", pa.float32()), ("y1", pa.float32())])
SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("path", pa.string()), ("frame", pa.int32()), ("shot", pa.int16()),
    ("cut", pa.bool_()), ("width", pa.int32()), ("height", pa.int32()), ("label", pa.string()),
    ("primary", pa.string()), ("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()),
    ("y1", pa.float32()), ("face_px", pa.float32()), ("turned_away", pa.bool_()),
    ("identities", pa.list_(pa.string())), ("others", pa.list_(_BOX)), ("conditions", pa.string()),
])


def write(root: Path, rows: list[dict]) -> Path:
    path = Path(root) / GROUND_TRUTH
    return write_parquet_atomic(pa.Table.from_pylist(rows, schema=SCHEMA), path)


@dataclass
class ClipTruth:
    """One clip's truth as arrays over its source frames (NaN boxes where the primary is absent)."""

    clip_id: str
    path: str
    width: int
    height: int
    primary: str
    boxes: np.ndarray  # (n, 4) float32
    turned_away: np.ndarray  # (n,) bool
    shot: np.ndarray  # (n,) int
    others: list[list[tuple[str, np.ndarray]]] = field(default_factory=list)  # per frame, back to front
    conditions: list[str] = field(default_factory=list)

    @property
    def cuts(self) -> list[int]:
        """Source frame indices where a new shot starts."""
        return [int(i) for i in np.flatnonzero(np.diff(self.shot) != 0) + 1]

    @property
    def face_px(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    def who_at(self, frame: int, x: float, y: float) -> str | None:
        """The person whose face box holds (x, y) at `frame`: the primary (drawn in front) first."""
        b = self.boxes[frame]
        if not np.isnan(b[0]) and b[0] <= x <= b[2] and b[1] <= y <= b[3]:
            return self.primary
        for name, ob in reversed(self.others[frame]):
            if ob[0] <= x <= ob[2] and ob[1] <= y <= ob[3]:
                return name
        return None


def read(root: Path) -> dict[str, ClipTruth]:
    """The ground truth of a dataset root, by video path relative to the root."""
    table = pq.read_table(Path(root) / GROUND_TRUTH).sort_by([("path", "ascending"), ("frame", "ascending")])
    rows = table.to_pylist()
    out: dict[str, ClipTruth] = {}
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    for path, rs in by_path.items():
        boxes = np.array([[np.nan if r[k] is None else r[k] for k in ("x0", "y0", "x1", "y1")] for r in rs],
                         np.float32)
        others = [[(o["identity"], np.array([o["x0"], o["y0"], o["x1"], o["y1"]], np.float32))
                   for o in (r["others"] or [])] for r in rs]
        out[path] = ClipTruth(
            clip_id=rs[0]["clip_id"], path=path, width=rs[0]["width"], height=rs[0]["height"],
            primary=rs[0]["primary"], boxes=boxes, turned_away=np.array([r["turned_away"] for r in rs], bool),
            shot=np.array([r["shot"] for r in rs], int), others=others, conditions=[r["conditions"] for r in rs])
    return out


@dataclass
class ClipScore:
    eligible: int = 0  # kept frames with the primary face >= min_face px and not turned away
    hits: int = 0  # ... found by the landmarker with the window centre inside the true box
    found: int = 0  # ... found by the landmarker (wherever the window was)
    switches: int = 0  # changes of the person under the window centre inside one true shot
    off_face: int = 0  # kept frames with face_found whose window centre is on nobody's face (primary box known)
    cuts_true: int = 0  # pairs of consecutive kept frames that straddle a true cut
    cuts_found: int = 0  # ... of those, pairs whose stored shot index changes
    cuts_false: int = 0  # pairs inside one true shot whose stored shot index changes

    def add(self, other: ClipScore) -> ClipScore:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self


def score_clip(truth: ClipTruth, frame_indices, face_found, boxes=None, shots=None,
               min_face: float = MIN_FACE_PX) -> ClipScore:
    """Score one stored clip. `boxes` (T, 4) are the crop windows in source pixels; without them only
    `eligible` and `found` are counted. `shots` (T,) is the stored shot index, if the store has one."""
    idx = np.asarray(frame_indices, int)
    found = np.asarray(face_found, bool)
    s = ClipScore()
    face_px = truth.face_px[idx]
    ok = ~np.isnan(face_px) & (face_px >= min_face) & ~truth.turned_away[idx]
    s.eligible = int(ok.sum())
    s.found = int((ok & found).sum())
    if boxes is not None:
        boxes = np.asarray(boxes, np.float64)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        who = [truth.who_at(f, x, y) if fnd and np.isfinite(x) else None
               for f, x, y, fnd in zip(idx, cx, cy, found, strict=True)]
        s.hits = int(sum(1 for i in np.flatnonzero(ok & found) if who[i] == truth.primary))
        known = ~np.isnan(truth.boxes[idx, 0])  # where nobody's box is known, "off face" means nothing
        s.off_face = int(sum(1 for i in np.flatnonzero(found & known) if who[i] is None))
        last: dict[int, str] = {}
        for f, w in zip(idx, who, strict=True):
            if w is None:
                continue
            shot = int(truth.shot[f])
            if shot in last and last[shot] != w:
                s.switches += 1
            last[shot] = w
    if shots is not None:
        shots = np.asarray(shots)
        for a in range(len(idx) - 1):
            true_cut = truth.shot[idx[a + 1]] != truth.shot[idx[a]]
            stored_cut = shots[a + 1] != shots[a]
            s.cuts_true += int(true_cut)
            s.cuts_found += int(true_cut and stored_cut)
            s.cuts_false += int(stored_cut and not true_cut)
    return s


def unmeasured_frames(frame_indices, face_found, landmarks, blendshapes=None, parsing=None) -> dict[str, int]:
    """Frames that carry values not measured on them.

    `filled`: face_found is false but landmarks, blendshapes or parsing are not all zero.
    `copied`: face_found is true and the landmarks equal, bit for bit, those of a frame from another
    source index (a landmarker never returns identical floats for two different images).
    """
    idx = np.asarray(frame_indices, int)
    found = np.asarray(face_found, bool)
    marks = np.asarray(landmarks)
    filled = 0
    for t in np.flatnonzero(~found):
        nonzero = np.any(marks[t] != 0)
        if blendshapes is not None:
            nonzero = nonzero or np.any(np.asarray(blendshapes[t]) != 0)
        if parsing is not None:
            nonzero = nonzero or np.any(np.asarray(parsing[t]) != 0)
        filled += int(nonzero)
    copied = 0
    seen: dict[bytes, int] = {}
    for t in np.flatnonzero(found):
        key = np.ascontiguousarray(marks[t]).tobytes()
        if key in seen and seen[key] != idx[t]:
            copied += 1
        seen.setdefault(key, int(idx[t]))
    return {"filled": filled, "copied": copied}
