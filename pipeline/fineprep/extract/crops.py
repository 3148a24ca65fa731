"""Square crop windows cut from a frame: the geometry the crops, the mesh input and the store share."""

from __future__ import annotations

import cv2
import numpy as np


def crop_square(frame: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The square window of `frame` resized to size x size; parts outside the frame are black.

    Up to a 2x reduction one bilinear warp is as sharp as area resampling and skips the copy and the
    border padding; larger reductions keep INTER_AREA so the crop does not alias."""
    h, w = frame.shape[:2]
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(int(round(side)), 1)
    if s <= 2 * size:  # mild downscale or upscale: one bilinear warp, borders filled black on the way
        a = size / s
        m = np.array([[a, 0.0, (0.5 - x0) * a - 0.5], [0.0, a, (0.5 - y0) * a - 0.5]])
        return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))
    x1, y1 = x0 + s, y0 + s
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 <= ix0 or iy1 <= iy0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    roi = frame[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
        roi = cv2.copyMakeBorder(roi, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return cv2.resize(roi, (size, size), interpolation=cv2.INTER_AREA)  # only reductions beyond 2x get here


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """A frame that is already a face crop, resized to size x size (used for frame-folder sources)."""
    h, w = frame.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(frame)
    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)

