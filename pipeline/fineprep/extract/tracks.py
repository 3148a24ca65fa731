"""Face tracks over a clip's kept frames, one chosen face per shot, and its crop window per frame.

Detections (detect.TiledDetector) are linked frame to frame inside one shot: a detection continues a
track when its centre lies within GATE box sides of the track's last box (a little more per missed
kept frame, and per source frame between the two: a face moves further between kept frames far apart
in time) and its size is within SIZE_RATIO of it; among such pairs the cheapest assignment wins
(cost = centre distance in box sides + |log size ratio|). A track never crosses a shot cut.

Per shot one track is chosen. With `primary` (the face a DFER label is about) its score is

    coverage * confidence * size * (0.5 + 0.5 * centrality)

coverage: share of the shot's kept frames where the track has a detection; confidence: mean detector
score; size: median box side / the frame's short side; centrality: 1 - median distance of the box
centre from the frame centre / half the frame diagonal. `largest` scores coverage * size and
`center` coverage * centrality. The crop window follows the chosen track only: frames of the shot
where it was not detected take its box by linear interpolation between its detections (held at its
ends), and the Gaussian smoothing runs inside the shot, so no window mixes two shots or two people.
A shot without any detection gets the centred square of the frame's short side and no track score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GATE = 0.8          # centre distance (in box sides) for consecutive kept frames
GATE_PER_GAP = 0.3  # added per missed kept frame
GATE_PER_FRAME = 0.04  # added per source frame between the two beyond the first (kept frames 15 source
                       # frames apart: a juggler's face moved 1.2-1.3 sides; 2-3 apart in the synth set)
MAX_GATE = 2.0
SIZE_RATIO = 1.6    # the larger side over the smaller
MAX_GAP = 4         # kept frames a track may miss and still continue
RULES = ("primary", "largest", "center")


@dataclass
class Track:
    shot: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # x0, y0, x1, y1, score

    def last(self) -> np.ndarray:
        return self.boxes[-1]


def _centre_side(b: np.ndarray) -> tuple[float, float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], b[3] - b[1])


def link_cost(a: np.ndarray, b: np.ndarray, gap: int, frames_apart: int | None = None) -> float:
    """Cost of `b` continuing a track whose last box is `a`, `gap` kept frames (`frames_apart` source
    frames, default `gap`) later; inf when too far."""
    ax, ay, aside = _centre_side(a)
    bx, by, bside = _centre_side(b)
    if aside <= 0 or bside <= 0:
        return np.inf
    ratio = max(aside, bside) / min(aside, bside)
    dist = np.hypot(ax - bx, ay - by) / ((aside + bside) / 2)
    apart = gap if frames_apart is None else frames_apart
    gate = min(GATE + GATE_PER_GAP * (gap - 1) + GATE_PER_FRAME * max(apart - 1, 0), MAX_GATE)
    if ratio > SIZE_RATIO or dist > gate:
        return np.inf
    return float(dist + np.log(ratio))


def link(detections: list[np.ndarray], shot: np.ndarray, source_index: np.ndarray | None = None) -> list[Track]:
    """Tracks from per-frame (K, 5) detections; `shot` (T,) is each frame's shot, `source_index` (T,)
    each kept frame's index in the source (the gate widens with the time between two kept frames)."""
    pos = np.arange(len(detections)) if source_index is None else np.asarray(source_index)
    from scipy.optimize import linear_sum_assignment

    tracks: list[Track] = []
    for t, dets in enumerate(detections):
        open_ = [tr for tr in tracks if tr.shot == shot[t] and t - tr.frames[-1] <= MAX_GAP + 1]
        taken: set[int] = set()
        if open_ and len(dets):
            cost = np.array([[link_cost(tr.last(), d, t - tr.frames[-1], int(pos[t] - pos[tr.frames[-1]]))
                              for d in dets] for tr in open_])
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e9))
            for r, c in zip(rows, cols, strict=True):
                if np.isfinite(cost[r, c]):
                    open_[r].frames.append(t)
                    open_[r].boxes.append(dets[c])
                    taken.add(int(c))
        for c, d in enumerate(dets):
            if c not in taken:
                tracks.append(Track(int(shot[t]), [t], [d]))
    return tracks


def score(track: Track, shot_frames: int, width: int, height: int, rule: str = "primary") -> float:
    """The track's score under `rule` (see the module docstring); higher is chosen."""
    boxes = np.asarray(track.boxes, dtype=np.float64)
    coverage = len(set(track.frames)) / max(shot_frames, 1)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    size = float(np.median(sides)) / min(width, height)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    off = np.hypot(cx - width / 2, cy - height / 2) / (np.hypot(width, height) / 2)
    centrality = float(np.clip(1.0 - np.median(off), 0.0, 1.0))
    if rule == "largest":
        return coverage * size
    if rule == "center":
        return coverage * centrality
    if rule != "primary":
        raise ValueError(f"face rule must be one of {', '.join(RULES)}, not {rule!r}")
    return coverage * float(boxes[:, 4].mean()) * size * (0.5 + 0.5 * centrality)


def choose(tracks: list[Track], shot: np.ndarray, width: int, height: int, rule: str = "primary"
           ) -> dict[int, tuple[Track, float]]:
    """Shot -> (its chosen track, that track's score)."""
    counts = np.bincount(shot) if len(shot) else np.zeros(0, int)
    best: dict[int, tuple[Track, float]] = {}
    for tr in tracks:
        s = score(tr, int(counts[tr.shot]), width, height, rule)
        if tr.shot not in best or s > best[tr.shot][1]:
            best[tr.shot] = (tr, s)
    return best


@dataclass
class Windows:
    """Square crop windows per kept frame: centre x, y and side in source pixels, and the track score
    (NaN where no track chose the window)."""

    cx: np.ndarray
    cy: np.ndarray
    side: np.ndarray
    track_score: np.ndarray

    def boxes(self) -> np.ndarray:
        """(T, 4) float32 x0, y0, x1, y1."""
        h = self.side / 2
        return np.stack([self.cx - h, self.cy - h, self.cx + h, self.cy + h], axis=1).astype(np.float32)


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over positions (one shot's frames), normalised at the ends."""
    if sigma <= 0 or len(values) < 2:
        return values
    pos = np.arange(len(values), dtype=np.float64)
    k = np.exp(-0.5 * ((pos[:, None] - pos[None, :]) / sigma) ** 2)
    return (k @ values) / k.sum(axis=1)


def windows(chosen: dict[int, tuple[Track, float]], shot: np.ndarray, width: int, height: int, margin: float,
            sigma: float = 1.0) -> Windows:
    """Each kept frame's crop window from its shot's chosen track (see the module docstring)."""
    t = len(shot)
    cx, cy = np.full(t, width / 2, np.float64), np.full(t, height / 2, np.float64)
    side = np.full(t, float(min(width, height)), np.float64)
    track_score = np.full(t, np.nan, np.float32)
    for s in np.unique(shot):
        frames = np.flatnonzero(shot == s)
        if int(s) not in chosen:
            continue
        tr, sc = chosen[int(s)]
        have = np.asarray(tr.frames, dtype=np.float64)
        boxes = np.asarray(tr.boxes, dtype=np.float64)
        series = []
        for v in ((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                  np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1.0 + margin)):
            series.append(smooth(np.interp(frames.astype(np.float64), have, v), sigma))
        cx[frames], cy[frames], side[frames] = series
        track_score[frames] = sc
    return Windows(cx, cy, side, track_score)
