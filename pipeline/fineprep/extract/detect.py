"""Every face in a raw video frame, small ones included: the short-range detector over a tile pyramid.

The detector inside `face_landmarker.task` (BlazeFace short range) sees its input at 128 x 128 and
finds faces from about 16 px there (measured on a portrait scaled into a 128 px canvas: 14 px none,
16 px at score 0.74, 20 px and up at 0.94 or more). On a whole 640x360 frame that means faces of
80 px and up; on 1080p, 240 px. So the frame is searched coarse to fine:
the whole frame, then square tiles that overlap by a third, each level's tiles smaller by up to 2x,
down to tiles on which a face of `min_face` px appears 26 px high (at 22 px, compressed and
low-contrast faces of 44-60 px were found in only half the frames of the in-the-wild synth set).
The descent stops at the first level where the largest face found so far (score >= MIN_SCORE) is at least
`SETTLED_PX` high: faces under half its size could not win the primary choice, which weighs size
linearly (a close-up costs one detector call; a wide frame of small faces tens). Detections from
all levels are merged: a box cut by an inner tile edge is dropped (an overlapping tile holds that
face whole) and of two boxes that mostly cover each other the higher-scoring one is kept.

Where the pyramid found no face of MIN_SCORE or more, a second detector (centerface.CenterFace, which
sees small, down-looking, profile and blurred faces) is asked about the whole frame, and its boxes
replace the weak ones.
"""

from __future__ import annotations

import math

import numpy as np

from ..quiet import quiet_native_logs

DETECTOR_INPUT = 128   # the model's input side
TARGET_PX = 26         # a face of min_face px appears this high on the finest tiles
SETTLED_PX = 32        # stop descending once the largest kept face appears this high at the current level
OVERLAP = 1 / 3        # of a tile's side, shared with its neighbour
EDGE_PX = 2            # a box within this many input px of an inner tile edge is cut by the tile
MIN_SCORE = 0.7       # kept detections (measured on composites: faces 0.76 and up at the 1st percentile,
                      # non-faces 0.50-0.66); a frame with only weaker ones keeps its best (rendered synth
                      # faces filling the frame score 0.61-0.66)
SAME_FACE = 0.5        # intersection over the smaller box above which two boxes are one face
SECOND_BELOW = 0.7     # the second detector is asked where no face scores this much


def tile_sides(width: int, height: int, min_face: float) -> list[int]:
    """Square tile sides, coarse to fine: the frame's short side, then smaller by at most 2x each step,
    the last one showing a face of `min_face` px at TARGET_PX."""
    short = min(width, height)
    finest = max(min_face * DETECTOR_INPUT / TARGET_PX, DETECTOR_INPUT)
    if short <= finest:
        return [short] if max(width, height) > short else []
    steps = math.ceil(math.log2(short / finest))
    ratio = (short / finest) ** (1 / steps)
    sides = [int(round(short / ratio ** k)) for k in range(steps + 1)]
    # A level must be at least 4/3 finer than the whole frame (letterboxed at its long side), or it
    # only repeats that pass: a 256 px frame gets no tiles (a 40 px face is 20 px there already).
    return [s for s in sides if s <= 0.75 * max(width, height)]


def tile_origins(length: int, side: int) -> list[int]:
    """Evenly spaced tile starts along one axis so tiles of `side` cover `length` with >= OVERLAP shared."""
    if side >= length:
        return [0]
    n = math.ceil((length - side) / (side * (1 - OVERLAP))) + 1
    return [int(round(i * (length - side) / (n - 1))) for i in range(n)]


def merge(boxes: np.ndarray) -> np.ndarray:
    """(K, 5) x0, y0, x1, y1, score -> the same without duplicates: by score, a box that covers more than
    SAME_FACE of the smaller of itself and a kept box is dropped."""
    if len(boxes) < 2:
        return boxes
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        b = boxes[i]
        dup = False
        for j in keep:
            k = boxes[j]
            iw = min(b[2], k[2]) - max(b[0], k[0])
            ih = min(b[3], k[3]) - max(b[1], k[1])
            if iw > 0 and ih > 0 and iw * ih > SAME_FACE * min(area[i], area[j]):
                dup = True
                break
        if not dup:
            keep.append(int(i))
    return boxes[sorted(keep)]


class TiledDetector:
    """Runs a mediapipe FaceDetector (IMAGE mode) over the tile pyramid of each frame."""

    def __init__(self, detector, min_face: float = 40.0, second=None):
        self.detector = detector
        self.min_face = float(min_face)
        self.second = second  # asked where the pyramid found only weak faces (or none); None: never
        self.calls = 0  # detector invocations, for the benchmark

    def _run(self, image: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        import mediapipe as mp

        self.calls += 1
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        if self.calls == 1:  # mediapipe logs its delegate setup on a detector's first inference
            with quiet_native_logs():
                result = self.detector.detect(image)
        else:
            result = self.detector.detect(image)
        out = []
        for d in result.detections:
            b = d.bounding_box
            score = d.categories[0].score if d.categories else 0.0
            out.append((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height, score))
        return out

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """(K, 5) float32 boxes x0, y0, x1, y1 (source pixels) and score, for every face in `frame`."""
        h, w = frame.shape[:2]
        found = [b for b in self._run(frame)]
        scale = max(h, w) / DETECTOR_INPUT  # the whole frame is letterboxed into the input
        for side in tile_sides(w, h, self.min_face):
            if max((b[3] - b[1] for b in found if b[4] >= MIN_SCORE), default=0.0) / scale >= SETTLED_PX:
                break
            scale = side / DETECTOR_INPUT
            edge = EDGE_PX * scale
            for y0 in tile_origins(h, side):
                for x0 in tile_origins(w, side):
                    th, tw = min(side, h - y0), min(side, w - x0)
                    for bx0, by0, bx1, by1, s in self._run(frame[y0:y0 + th, x0:x0 + tw]):
                        cut = ((bx0 < edge and x0 > 0) or (by0 < edge and y0 > 0)
                               or (bx1 > tw - edge and x0 + tw < w) or (by1 > th - edge and y0 + th < h))
                        if not cut:
                            found.append((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0, s))
        boxes = np.asarray(found, dtype=np.float32).reshape(-1, 5)
        if self.second is not None and not (boxes[:, 4] >= SECOND_BELOW).any():
            more = self.second.detect(frame)
            if len(more):  # its faces replace the pyramid's weak ones (non-faces score 0.50-0.66 there)
                return merge(more)
        strong = boxes[boxes[:, 4] >= MIN_SCORE]
        if len(strong) == 0 and len(boxes):  # only weak ones: the best, as the whole-frame pass alone did
            strong = boxes[np.argmax(boxes[:, 4])][None]
        return merge(strong)

    def detect_all(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return [self.detect(f) for f in frames]
