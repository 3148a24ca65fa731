"""Decode only the frames a clip keeps, from a video file or a folder of image files.

Every failure becomes a `ClipFailure` carrying a manifest status and a one-line reason, so the
batch records it on the clip's row and moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fineschema import tables

from .sampling import segment_centres

# Past this many frames between two wanted frames, seeking beats decoding forward.
SEEK_GAP = 48


class ClipFailure(Exception):
    """A clip that cannot be extracted; `status` is a manifest status, the message its one-line reason."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Sampled:
    """The kept frames of a clip (RGB uint8, full source resolution) and where they came from."""

    frames: list[np.ndarray]
    indices: list[int]
    num_source_frames: int
    fps: float | None


def read_video(path: Path, frames: int) -> Sampled:
    """Open `path`, pick `frames` segment-centre indices and decode just those (grab forward, seek on big gaps)."""
    if not path.exists():
        raise ClipFailure(tables.STATUS_MISSING, f"video {path.name} not found")
    if path.stat().st_size == 0:
        raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} is an empty (zero-byte) file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} cannot be opened (undecodable or truncated)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None
        if count <= 0:
            count = _count_frames(cap)
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if count <= 0:
            raise ClipFailure(tables.STATUS_CORRUPT, f"video {path.name} has no decodable frames")
        indices = segment_centres(count, frames)
        decoded: dict[int, np.ndarray] = {}
        pos = 0  # index of the frame the next grab() returns
        for idx in sorted(set(indices)):
            if idx - pos > SEEK_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                pos = idx
            ok = True
            while ok and pos <= idx:
                ok = cap.grab()
                pos += 1
            ok = ok and pos == idx + 1
            image = cap.retrieve()[1] if ok else None
            if image is None:
                raise ClipFailure(
                    tables.STATUS_CORRUPT,
                    f"video {path.name} is truncated or damaged: frame {idx} of {count} could not be decoded",
                )
            decoded[idx] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return Sampled([decoded[i] for i in indices], indices, count, fps)
    finally:
        cap.release()


def _count_frames(cap: cv2.VideoCapture) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def read_image_files(files: list[Path], frames: int, where: str) -> Sampled:
    """Read the segment-centre images among `files` (already sorted); `where` names the folder in errors."""
    if not files:
        raise ClipFailure(tables.STATUS_CORRUPT, f"frame folder {where} holds no image files")
    indices = segment_centres(len(files), frames)
    decoded: dict[int, np.ndarray] = {}
    for idx in sorted(set(indices)):
        f = files[idx]
        image = None
        try:
            if f.stat().st_size > 0:
                image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        except OSError:
            image = None
        if image is None:
            raise ClipFailure(tables.STATUS_CORRUPT, f"image {where}/{f.name} is unreadable (empty or not an image)")
        decoded[idx] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return Sampled([decoded[i] for i in indices], indices, len(files), None)
