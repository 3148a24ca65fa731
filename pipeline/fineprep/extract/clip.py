"""One clip end to end: sample and decode, find and crop the face, landmarks and blendshapes, parsing.

Raw video: every face of every kept frame is detected (detect.TiledDetector, small faces included),
the clip is cut into shots (shots.CutWatcher, fed every decoded frame), detections are linked into tracks inside each
shot and one track per shot is chosen (tracks: `primary`, `largest` or `center`); its boxes, filled and
smoothed inside that track and shot only, give square crops with a margin. Frame-folder sources
(DFEW clip_224x224, FERV39k 2_ClipsforFaceCrop) are already aligned face crops, so they are only
resized; their whole image is the face's window.

The mesh and blendshape networks run on each window (mesh.MeshTracker, no second detector inside
it) and give a face-presence score, stored per frame as `landmark_score`. A frame's face is found
where a tracked face is in the window and its score reaches `min_landmark_score`; a tracked frame
under it is tried again on a wider and on a tighter window. Nothing is copied between frames: where
the face is not found, landmarks, blendshapes and parsing stay zeros and `face_found` is false.

Every clip whose frames decode is stored, because the official protocols score every listed clip: one
whose face was found in fewer than `min_found_ratio` of its kept frames is `few_faces`, in none
`no_face`. A raw video in which the detector found no face at all stores its whole frames, letterboxed
to a square (`frames_input = whole_frame`, boxes = the whole frame, no track, so nothing is measured
on them): pixels that were really there, not a guess at a face. Only clips that cannot be read stay
without arrays.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fineschema import tables

from ..entries import ClipEntry
from . import detect, faces, media, mesh, shots, tracks
from .config import ExtractConfig
from .parsing import FaceParser

# Retry windows for a tracked frame whose mesh score is under the threshold: wider (the face was cut), then tighter
# (the face was too small in the crop), as factors of the window side.
RETRY_SCALES = (1.5, 1 / 1.4)
# A window re-centred on the first mesh: its side over the mesh's extent (the tracker's window is 1.6x a
# BlazeFace box, which is about 0.85x the mesh's forehead-to-chin extent).
RECENTRE_SIDE = 1.4


@dataclass
class ClipResult:
    entry: ClipEntry
    status: str
    error: str | None = None
    indices: list[int] = field(default_factory=list)
    num_source_frames: int | None = None
    fps: float | None = None
    arrays: dict[str, np.ndarray] | None = None
    source_width: int | None = None
    source_height: int | None = None
    frames_input: str | None = None  # tables.FRAMES_INPUTS: what the stored frames show

    @property
    def face_found_ratio(self) -> float | None:
        return float(self.arrays["face_found"].mean()) if self.arrays is not None else None


class StageTimer:
    """Seconds spent per stage, summed over the clips a worker runs (for the benchmark's breakdown)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now


def source_of(root: Path, entry: ClipEntry) -> Path:
    from ..datasets.common import resolve_inside

    return resolve_inside(root, entry.source_path)


def extract_clip(entry: ClipEntry, root: Path, config: ExtractConfig, models: faces.FaceModels,
                 tracker: mesh.MeshTracker, parser: FaceParser, timer: StageTimer | None = None) -> ClipResult:
    """Run one clip; any failure comes back as a result with a status and a one-line reason."""
    timer = timer or StageTimer()
    try:
        return _extract(entry, root, config, models, tracker, parser, timer)
    except media.ClipFailure as exc:
        return ClipResult(entry, exc.status, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad clip never stops the batch
        from ..datasets.common import BadPathError, OutsideRootError

        status = tables.STATUS_OUTSIDE_ROOT if isinstance(exc, OutsideRootError) else \
            tables.STATUS_BAD_PATH if isinstance(exc, BadPathError) else tables.STATUS_ERROR
        return ClipResult(entry, status, f"{type(exc).__name__}: {exc}".splitlines()[0])


def _extract(entry: ClipEntry, root: Path, config: ExtractConfig, models: faces.FaceModels,
             tracker: mesh.MeshTracker, parser: FaceParser, timer: StageTimer) -> ClipResult:
    t0 = time.perf_counter()
    sampled, cuts = _decode(entry, root, config)
    t0 = timer.add("decode", t0)
    h, w = sampled.frames[0].shape[:2]
    t = len(sampled.frames)
    if entry.media == "frames" and not config.crop_frame_sources:
        crops = np.stack([faces.resize_square(f, config.size) for f in sampled.frames])
        boxes = np.tile(np.array([0, 0, w, h], np.float32), (t, 1))
        shot = np.zeros(t, np.int16)
        win, shown = _whole(t, w, h), tables.INPUT_SOURCE_FRAMES
    else:
        shot, win, shown = _track(entry, sampled, cuts, config, models, timer)
        t0 = time.perf_counter()
        crops = np.stack([faces.crop_square(f, win.cx[i], win.cy[i], win.side[i], config.size)
                          for i, f in enumerate(sampled.frames)])
        boxes = win.boxes()
    t0 = timer.add("crop", t0)
    tracked = np.ones(t, bool) if entry.media == "frames" and not config.crop_frame_sources \
        else np.isfinite(win.track_score)
    got, found = _landmarks(sampled.frames, crops, boxes, win, tracked, config, tracker)
    marks, shapes = got.landmarks, got.blendshapes
    t0 = timer.add("landmarks", t0)
    parsing = parser.parse(crops, marks) if found.any() else np.zeros(crops.shape[:3], np.uint8)
    parsing[~found] = 0  # nothing measured there
    timer.add("parsing", t0)
    arrays = {"frames": crops, "parsing": parsing, "landmarks": marks, "blendshapes": shapes, "face_found": found,
              "landmark_score": got.score, "boxes": boxes.astype(np.float32), "shot": shot.astype(np.int16),
              "track_score": win.track_score.astype(np.float32)}
    status, error = _face_status(found, shown, config)
    return ClipResult(entry, status, error, sampled.indices, sampled.num_source_frames, sampled.fps, arrays,
                      source_width=w, source_height=h, frames_input=shown)


def _face_status(found: np.ndarray, shown: str, config: ExtractConfig) -> tuple[str, str | None]:
    """ok, few_faces or no_face from the kept frames whose face was measured, with the reason."""
    t, n = len(found), int(found.sum())
    if shown == tables.INPUT_WHOLE_FRAME:
        return tables.STATUS_NO_FACE, f"no face detected in any of {t} sampled frames: whole frames stored"
    if not n:
        return tables.STATUS_NO_FACE, (f"no face with a mesh score of {config.min_landmark_score:g} or more in any "
                                       f"of {t} frames")
    if n / t < config.min_found_ratio:
        return tables.STATUS_FEW_FACES, (f"the face was found in {n} of {t} kept frames, below the min found ratio "
                                         f"{config.min_found_ratio:g}")
    return tables.STATUS_OK, None


def _whole(t: int, w: int, h: int) -> tracks.Windows:
    """Windows covering each whole frame: a square of the longer side, centred (letterboxed)."""
    return tracks.Windows(np.full(t, w / 2), np.full(t, h / 2), np.full(t, float(max(w, h))),
                          np.full(t, np.nan, np.float32))


def _decode(entry: ClipEntry, root: Path, config: ExtractConfig) -> tuple[media.Sampled, shots.CutWatcher | None]:
    """The kept frames; for a video also the cut watcher that saw every decoded frame."""
    if entry.source_path is None:
        raise media.ClipFailure(tables.STATUS_ERROR, "entry has no source path")
    if entry.media != "frames":
        cuts = shots.CutWatcher(config.cut_change)
        return media.read_video(source_of(root, entry), config.frames, config.max_pixels, watch=cuts), cuts
    from ..datasets.common import frame_files

    folder = source_of(root, entry)
    if not folder.is_dir():
        raise media.ClipFailure(tables.STATUS_MISSING, f"frame folder {entry.source_path} not found")
    need = config.size * (4 if config.crop_frame_sources else 1)  # a face may be a quarter of a frame
    return media.read_image_files(frame_files(root, entry), config.frames, entry.source_path,
                                  max_pixels=config.max_pixels, need_side=need), None


def _track(entry: ClipEntry, sampled: media.Sampled, cuts: shots.CutWatcher | None, config: ExtractConfig,
           models: faces.FaceModels, timer: StageTimer) -> tuple[np.ndarray, tracks.Windows, str]:
    """Every face of every kept frame, linked into tracks per shot; the chosen track's crop windows and
    what they show (the face, or the whole frame where no face was detected in any kept frame)."""
    t0 = time.perf_counter()
    h, w = sampled.frames[0].shape[:2]
    second = models.second if config.second_detector else None
    found_boxes = detect.TiledDetector(models.detector, config.min_face, second).detect_all(sampled.frames)
    t0 = timer.add("detect", t0)
    shot = shots.shot_index(sampled.frames, config.cut_change) if cuts is None else cuts.shots(sampled.indices)
    if not any(len(b) for b in found_boxes):
        timer.add("track", t0)
        return shot, _whole(len(sampled.frames), w, h), tables.INPUT_WHOLE_FRAME
    chosen = tracks.choose(tracks.link(found_boxes, shot, np.asarray(sampled.indices)), shot, w, h, config.face)
    win = tracks.windows(chosen, shot, w, h, config.margin, config.smooth_sigma)
    timer.add("track", t0)
    return shot, win, tables.INPUT_FACE_CROP


def _landmarks(frames: list[np.ndarray], crops: np.ndarray, boxes: np.ndarray, win: tracks.Windows,
               tracked: np.ndarray, config: ExtractConfig, tracker: mesh.MeshTracker
               ) -> tuple[mesh.Measured, np.ndarray]:
    """The mesh on every tracked window, and which frames count as found. A tracked frame under the
    score threshold is retried on a wider, then a tighter window (its crop and box updated in place
    when one passes); the mesh of a frame not found is zeroed, its score kept."""
    got = mesh.Measured.zeros(len(frames))
    idx = np.flatnonzero(tracked)
    if len(idx):
        part = tracker.run([frames[i] for i in idx], boxes[idx])
        got.landmarks[idx], got.blendshapes[idx], got.score[idx] = part.landmarks, part.blendshapes, part.score
    found = tracked & (got.score >= config.min_landmark_score)
    for i in np.flatnonzero(tracked & ~found):
        for box in _retry_boxes(win, i, boxes[i], got.landmarks[i]):
            marks, shapes, score = mesh.measure_box(tracker.net, frames[i], box)
            if score >= config.min_landmark_score:
                side = box[2] - box[0]
                crops[i] = faces.crop_square(frames[i], (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side, config.size)
                boxes[i], found[i] = box, True
                got.landmarks[i], got.blendshapes[i], got.score[i] = marks, shapes, score
                break
    got.landmarks[~found], got.blendshapes[~found] = 0.0, 0.0
    return got, found


def _retry_boxes(win: tracks.Windows, i: int, box: np.ndarray, marks: np.ndarray) -> list[np.ndarray]:
    """Windows to try again for frame i: centred on where the first mesh put the face (the smoothed
    window lags behind a fast-moving face), then the tracker's window wider and tighter."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    xs, ys = x0 + marks[:, 0] * (x1 - x0), y0 + marks[:, 1] * (y1 - y0)
    side = RECENTRE_SIDE * max(xs.max() - xs.min(), ys.max() - ys.min())
    cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
    out = [np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)] \
        if 0.5 * (x1 - x0) < side < 2 * (x1 - x0) else []
    for k in RETRY_SCALES:
        out.append(tracks.Windows(win.cx[i:i + 1], win.cy[i:i + 1], win.side[i:i + 1] * k,
                                  win.track_score[i:i + 1]).boxes()[0])
    return out
