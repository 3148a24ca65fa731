"""One clip end to end: sample and decode, find and crop the face, landmarks and blendshapes, parsing.

Raw video: every face of every kept frame is detected (detect.TiledDetector, small faces included),
the clip is cut into shots (shots.CutWatcher, fed every decoded frame), detections are linked into tracks inside each
shot and one track per shot is chosen (tracks: `primary`, `largest` or `center`); its boxes, filled and
smoothed inside that track and shot only, give square crops with a margin. Frame-folder sources
(DFEW clip_224x224, FERV39k 2_ClipsforFaceCrop) are already aligned face crops, so they are only
resized; the landmarker still runs on every frame.

Nothing is copied between frames: a kept frame whose face the landmarker misses is tried again on a
wider and on a tighter window; if both miss too, its landmarks, blendshapes and parsing stay zeros and
`face_found` is false. A clip without any detected face is `no_face`; one whose landmarker found the
face in fewer than `min_found_ratio` of its kept frames is `few_faces` (its arrays are stored, the
trainer skips it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fineschema import tables

from ..entries import ClipEntry
from . import detect, faces, media, shots, tracks
from .parsing import FaceParser

# Retry windows for a frame whose face the landmarker missed: wider (the face was cut), then tighter
# (the face was too small in the crop), as factors of the window side.
RETRY_SCALES = (1.5, 1 / 1.4)


@dataclass
class Settings:
    """What shapes the stored data; recorded in the store's attributes and compared on re-runs."""

    frames: int = 16
    size: int = 224
    margin: float = 0.6       # crop side = (1 + margin) * detector box side
    smooth_sigma: float = 1.0  # Gaussian over kept frames, for the crop box
    parser: str = "mesh"
    parser_weights: str | None = None  # a learned parser's checkpoint; the store keeps its sha256
    landmark_mode: str = "image"  # image: each kept frame alone; video: track across the kept frames
    crop_frame_sources: bool = False  # frame folders are face crops already: resize, do not re-crop
    max_pixels: int = media.DEFAULT_MAX_PIXELS  # larger frames are refused before decoding
    face: str = "primary"         # which track per shot: primary | largest | center (tracks.RULES)
    min_face: float = 40.0        # smallest face (px high) the tiled detector looks for
    cut_change: float = shots.CUT_CHANGE  # picture change between neighbouring frames that starts a shot
    min_found_ratio: float = 0.25  # below this share of found frames a clip is few_faces, not ok

    def as_attrs(self) -> dict:
        """The settings that shape stored data (`max_pixels` only decides which clips are refused)."""
        return {k: v for k, v in self.__dict__.items() if k != "max_pixels"}


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


def extract_clip(entry: ClipEntry, root: Path, settings: Settings, models: faces.FaceModels,
                 tracker: faces.Tracker, parser: FaceParser, timer: StageTimer | None = None) -> ClipResult:
    """Run one clip; any failure comes back as a result with a status and a one-line reason."""
    timer = timer or StageTimer()
    try:
        return _extract(entry, root, settings, models, tracker, parser, timer)
    except media.ClipFailure as exc:
        return ClipResult(entry, exc.status, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad clip never stops the batch
        from ..datasets.common import BadPathError, OutsideRootError

        status = tables.STATUS_OUTSIDE_ROOT if isinstance(exc, OutsideRootError) else \
            tables.STATUS_BAD_PATH if isinstance(exc, BadPathError) else tables.STATUS_ERROR
        return ClipResult(entry, status, f"{type(exc).__name__}: {exc}".splitlines()[0])


def _extract(entry, root, settings, models, tracker, parser, timer) -> ClipResult:
    t0 = time.perf_counter()
    if entry.source_path is None:
        raise media.ClipFailure(tables.STATUS_ERROR, "entry has no source path")
    if entry.media == "frames":
        from ..datasets.common import frame_files

        folder = source_of(root, entry)
        if not folder.is_dir():
            raise media.ClipFailure(tables.STATUS_MISSING, f"frame folder {entry.source_path} not found")
        need = settings.size * (4 if settings.crop_frame_sources else 1)  # a face may be a quarter of a frame
        sampled = media.read_image_files(frame_files(root, entry), settings.frames, entry.source_path,
                                         max_pixels=settings.max_pixels, need_side=need)
    else:
        cuts = shots.CutWatcher(settings.cut_change)
        sampled = media.read_video(source_of(root, entry), settings.frames, settings.max_pixels, watch=cuts)
    t0 = timer.add("decode", t0)

    size = settings.size
    h, w = sampled.frames[0].shape[:2]
    t = len(sampled.frames)
    if entry.media == "frames" and not settings.crop_frame_sources:
        crops = np.stack([faces.resize_square(f, size) for f in sampled.frames])
        boxes = np.tile(np.array([0, 0, w, h], np.float32), (t, 1))
        shot = np.zeros(t, np.int16)
        win = tracks.Windows(np.full(t, w / 2), np.full(t, h / 2), np.full(t, float(max(w, h))),
                             np.full(t, np.nan, np.float32))
    else:
        detector = detect.TiledDetector(models.detector, settings.min_face)
        found_boxes = detector.detect_all(sampled.frames)
        t0 = timer.add("detect", t0)
        if not any(len(b) for b in found_boxes):
            raise media.ClipFailure(tables.STATUS_NO_FACE, f"no face detected in any of {t} sampled frames")
        shot = shots.shot_index(sampled.frames, settings.cut_change) if entry.media == "frames" else \
            cuts.shots(sampled.indices)
        chosen = tracks.choose(tracks.link(found_boxes, shot), shot, w, h, settings.face)
        win = tracks.windows(chosen, shot, w, h, settings.margin, settings.smooth_sigma)
        t0 = timer.add("track", t0)
        crops = np.stack([faces.crop_square(f, win.cx[i], win.cy[i], win.side[i], size)
                          for i, f in enumerate(sampled.frames)])
        boxes = win.boxes()
    t0 = timer.add("crop", t0)

    marks, shapes, found = tracker.run(crops)
    for i in np.flatnonzero(~found):
        for k in RETRY_SCALES:
            crop = faces.crop_square(sampled.frames[i], win.cx[i], win.cy[i], win.side[i] * k, size)
            got = faces.landmarks_of(models.still, crop)
            if got is not None:
                crops[i], (marks[i], shapes[i]), found[i] = crop, got, True
                boxes[i] = tracks.Windows(win.cx[i:i + 1], win.cy[i:i + 1], win.side[i:i + 1] * k,
                                          win.track_score[i:i + 1]).boxes()[0]
                break
    t0 = timer.add("landmarks", t0)
    if not found.any():
        raise media.ClipFailure(tables.STATUS_NO_FACE, f"the landmarker found no face in any of {t} frames")

    parsing = parser.parse(crops, marks)
    parsing[~found] = 0  # nothing measured there
    timer.add("parsing", t0)
    arrays = {"frames": crops, "parsing": parsing, "landmarks": marks, "blendshapes": shapes, "face_found": found,
              "boxes": boxes.astype(np.float32), "shot": shot.astype(np.int16),
              "track_score": win.track_score.astype(np.float32)}
    status, error = tables.STATUS_OK, None
    if found.mean() < settings.min_found_ratio:
        status = tables.STATUS_FEW_FACES
        error = (f"the landmarker found the face in {int(found.sum())} of {t} kept frames, below the "
                 f"min found ratio {settings.min_found_ratio:g}")
    return ClipResult(entry, status, error, sampled.indices, sampled.num_source_frames, sampled.fps, arrays,
                      source_width=w, source_height=h)
