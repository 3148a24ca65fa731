"""Shot cuts in a clip, from how much the picture changes between neighbouring decoded frames.

A cut changes the whole picture at once; motion inside a shot (a head turning, a hand, a slow pan)
changes it little from one frame to the next. The change between two frames is

    Bhattacharyya distance of their HSV histograms + 0.5 * (1 - correlation of their grey thumbnails)

(0: the same picture). The histogram sees a change of scene or lighting; the thumbnail sees a change
of layout with the same colours (a wide shot and a close-up of one set). `CutWatcher` is fed every
decoded frame of a clip in order (`media.read_video(watch=...)`), so a cut is found between the two
frames where it happens, not between kept frames half a second apart; where decoding seeks over a
long gap, the frames on either side of the gap are compared. `shot_index` compares kept frames alone
(frame-folder sources, which have no frames in between).

Measured: consecutive frames of the real talking-face videos change by at most 0.21 (kept frames 12
to 25 apart by up to 0.42, which is why neighbouring frames are compared); in the cut clip of
tests/test_faces_real.py the cut from a close-up to a wide shot changes by 0.87, the one from a wide
shot to another framing over the same background by 0.53, its other frames by at most 0.16. An
exposure step of 10 % between two frames changes by 0.36, one of 15 % by 0.43 (a cut).
CUT_CHANGE sits between. A frame's signature is cheap next to decoding it (BENCHMARKS.md, faces).
"""

from __future__ import annotations

import cv2
import numpy as np

CUT_CHANGE = 0.4
THUMB_WIDTH = 96   # frames are shrunk to this width first: the histogram needs colours, not detail
GREY = (32, 18)    # the layout thumbnail
BINS = (16, 4, 4)  # hue, saturation, value


def signature(frame: np.ndarray, bgr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(normalised HSV histogram, zero-mean unit-norm grey thumbnail) of an RGB (or BGR) frame."""
    h, w = frame.shape[:2]
    th = max(1, round(h * THUMB_WIDTH / w))
    if w > 4 * THUMB_WIDTH:  # bilinear to twice the thumbnail, then a 2x area step: 0.03 ms on 1080p where
        # one area resize all the way takes 11 ms; the histogram needs averaged colours, not exact ones
        frame = cv2.resize(frame, (2 * THUMB_WIDTH, 2 * th), interpolation=cv2.INTER_LINEAR)
        frame = cv2.resize(frame, (THUMB_WIDTH, th), interpolation=cv2.INTER_AREA)
    elif w > THUMB_WIDTH:
        frame = cv2.resize(frame, (THUMB_WIDTH, th), interpolation=cv2.INTER_LINEAR)
    frame = np.ascontiguousarray(frame)
    hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(BINS), [0, 180, 0, 256, 0, 256])
    hist = cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
    grey = cv2.resize(hsv[..., 2], GREY, interpolation=cv2.INTER_LINEAR).astype(np.float32)
    grey -= grey.mean()
    grey /= float(np.linalg.norm(grey)) + 1e-6
    return hist, grey


def change(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """How much the picture changed between two signatures (see the module docstring)."""
    hist = cv2.compareHist(a[0], b[0], cv2.HISTCMP_BHATTACHARYYA)
    return float(hist + 0.5 * (1.0 - float((a[1] * b[1]).sum())))


def changes(frames: list[np.ndarray]) -> np.ndarray:
    """(T-1,) change between each RGB frame and the next."""
    sigs = [signature(f) for f in frames]
    return np.array([change(a, b) for a, b in zip(sigs[:-1], sigs[1:], strict=True)], dtype=np.float64)


def shot_index(frames: list[np.ndarray], threshold: float = CUT_CHANGE) -> np.ndarray:
    """(T,) int16 shot of each of these frames: 0 for the first, +1 after every change above `threshold`."""
    if len(frames) == 0:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([[0], np.cumsum(changes(frames) > threshold)]).astype(np.int16)


class CutWatcher:
    """Sees a clip's decoded frames in order (BGR, as OpenCV decodes them) and notes where cuts fall."""

    def __init__(self, threshold: float = CUT_CHANGE):
        self.threshold = threshold
        self.cuts: list[int] = []  # source frame indices that start a new shot
        self._last: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def __call__(self, index: int, bgr: np.ndarray) -> None:
        if self._last is not None and self._last[0] == index:
            return
        sig = signature(bgr, bgr=True)
        if self._last is not None and change(self._last[1], sig) > self.threshold:
            self.cuts.append(index)
        self._last = (index, sig)

    def shots(self, indices: list[int]) -> np.ndarray:
        """(T,) int16 shot of each kept source frame index."""
        return np.searchsorted(np.asarray(self.cuts, dtype=np.int64), np.asarray(indices), side="right"
                               ).astype(np.int16)
