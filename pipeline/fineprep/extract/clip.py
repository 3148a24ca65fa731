"""One clip end to end: sample and decode, find and crop the face, landmarks and blendshapes, parsing.

Raw video goes through the detector: boxes per kept frame, gaps filled from neighbours, smoothed,
square crops with a margin. Frame-folder sources (DFEW clip_224x224, FERV39k 2_ClipsforFaceCrop) are
already aligned face crops, so they are only resized; the landmarker still runs on every frame.
A frame whose face the landmarker misses takes the landmarks and blendshapes of the nearest frame
that has one and is flagged in `face_found`; a clip with no face at all fails with status `no_face`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fineschema import tables

from ..entries import ClipEntry
from . import faces, media
from .parsing import FaceParser


@dataclass
class Settings:
    """What shapes the stored data; recorded in the store's attributes and compared on re-runs."""

    frames: int = 16
    size: int = 224
    margin: float = 0.6       # crop side = (1 + margin) * detector box side
    smooth_sigma: float = 1.0  # Gaussian over kept frames, for the crop box
    parser: str = "mesh"
    landmark_mode: str = "image"  # image: each kept frame alone; video: track across the kept frames
    crop_frame_sources: bool = False  # frame folders are face crops already: resize, do not re-crop
    max_pixels: int = media.DEFAULT_MAX_PIXELS  # larger frames are refused before decoding

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
        sampled = media.read_video(source_of(root, entry), settings.frames, settings.max_pixels)
    t0 = timer.add("decode", t0)

    size = settings.size
    if entry.media == "frames" and not settings.crop_frame_sources:
        crops = np.stack([faces.resize_square(f, size) for f in sampled.frames])
    else:
        boxes = models.detect(sampled.frames)
        t0 = timer.add("detect", t0)
        if np.isnan(boxes[:, 0]).all():
            raise media.ClipFailure(tables.STATUS_NO_FACE, f"no face detected in any of {len(boxes)} sampled frames")
        win = faces.crop_windows(boxes, settings.margin, settings.smooth_sigma)
        crops = np.stack([faces.crop_square(f, win.cx[i], win.cy[i], win.side[i], size)
                          for i, f in enumerate(sampled.frames)])
    t0 = timer.add("crop", t0)

    marks, shapes, found = tracker.run(crops)
    t0 = timer.add("landmarks", t0)
    if not found.any():
        raise media.ClipFailure(tables.STATUS_NO_FACE, f"the landmarker found no face in any of {len(found)} frames")
    if not found.all():
        marks, shapes = faces.fill_gaps(marks, found), faces.fill_gaps(shapes, found)

    parsing = parser.parse(crops, marks)
    timer.add("parsing", t0)
    arrays = {"frames": crops, "parsing": parsing, "landmarks": marks, "blendshapes": shapes, "face_found": found}
    return ClipResult(entry, tables.STATUS_OK, None, sampled.indices, sampled.num_source_frames, sampled.fps, arrays)
