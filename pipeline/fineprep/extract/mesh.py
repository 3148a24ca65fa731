"""The face mesh and blendshape networks run directly on the window the face tracker chose.

mediapipe's FaceLandmarker runs its own detector again inside a crop and drops the face when that
detector, or the mesh's face-presence score, is under 0.5: a plainly visible 3/4 face in dim light
came out as no face at all. Here the two networks of `face_landmarker.task`
(`face_landmarks_detector.tflite`, 256 x 256 input in [0, 1]; `face_blendshapes.tflite`, 146 of the
478 points in image pixels) run through LiteRT on the tracker's own window, which already follows
the mesh's region-of-interest convention (a square about 1.5x the detector's face box, centred on
it). The face-presence score (a sigmoid of the mesh's flag output) is returned with every mesh, so
the caller decides what counts as found and the store keeps the score for other thresholds.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineschema import layout

from ..quiet import quiet_native_logs
from .crops import crop_square, resize_square

MESH_INPUT = 256
MESH_MEMBER = "face_landmarks_detector.tflite"
BLENDSHAPE_MEMBER = "face_blendshapes.tflite"
DEFAULT_MIN_SCORE = 0.5  # mediapipe's own face-presence threshold

# The 146 mesh points the blendshape network reads, in its input order (mediapipe's
# face_blendshapes_graph.cc, kLandmarksSubsetIdxs).
BLENDSHAPE_POINTS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70,
    78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149,
    150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195,
    197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300,
    308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375,
    377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
])


@dataclass
class Measured:
    """A clip's mesh results: landmarks (T, 478, 3) as x, y in [0, 1] of each frame's box and z in the
    same unit, blendshapes (T, 52) and the face-presence score (T,) in [0, 1]."""

    landmarks: np.ndarray
    blendshapes: np.ndarray
    score: np.ndarray

    @classmethod
    def zeros(cls, t: int) -> Measured:
        return cls(np.zeros((t, layout.NUM_LANDMARKS, 3), np.float32),
                   np.zeros((t, layout.NUM_BLENDSHAPES), np.float32), np.zeros(t, np.float32))


def _interpreter(data: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    net = Interpreter(model_content=data, num_threads=threads)
    net.allocate_tensors()
    return net


class MeshNet:
    """The mesh and blendshape networks of one face_landmarker.task, on one thread (a Dask worker
    process runs one batch at a time; more threads per process only fight the other workers)."""

    def __init__(self, bundle: str | Path, threads: int = 1):
        members = zipfile.ZipFile(bundle)
        self._mesh = _interpreter(members.read(MESH_MEMBER), threads)
        self._shapes = _interpreter(members.read(BLENDSHAPE_MEMBER), threads)
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        outs = {tuple(d["shape"]): d["index"] for d in self._mesh.get_output_details()}
        self._marks_out = outs[(1, 1, 1, layout.NUM_LANDMARKS * 3)]
        self._flag_out = outs[(1, 1, 1, 1)]
        self._shapes_in = self._shapes.get_input_details()[0]["index"]
        self._shapes_out = self._shapes.get_output_details()[0]["index"]
        self.calls = 0  # mesh invocations, for the benchmark

    def mesh(self, roi: np.ndarray) -> tuple[np.ndarray, float]:
        """(478, 3) points in roi pixels (z in the same unit) and the face-presence score of one
        MESH_INPUT x MESH_INPUT RGB uint8 image."""
        self.calls += 1
        x = (roi.astype(np.float32) * (1 / 255.0))[None]
        with quiet_native_logs():  # LiteRT warns on stderr when numpy's buffer is not 64-byte aligned
            self._mesh.set_tensor(self._mesh_in, x)
            self._mesh.invoke()
        marks = self._mesh.get_tensor(self._marks_out).reshape(layout.NUM_LANDMARKS, 3)
        flag = float(self._mesh.get_tensor(self._flag_out).reshape(()))
        return marks.astype(np.float32), float(1.0 / (1.0 + np.exp(-flag)))

    def blendshapes(self, points_px: np.ndarray) -> np.ndarray:
        """(52,) coefficients from (478, 2+) mesh points in image pixels."""
        with quiet_native_logs():
            self._shapes.set_tensor(self._shapes_in, points_px[BLENDSHAPE_POINTS, :2].astype(np.float32)[None])
            self._shapes.invoke()
        return self._shapes.get_tensor(self._shapes_out).reshape(layout.NUM_BLENDSHAPES).astype(np.float32)


def measure_box(net: MeshNet, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mesh as x, y in [0, 1] of `box` (z in the same unit), blendshapes and score for one frame.

    The mesh input is the box cut from the source frame at MESH_INPUT px, the same window the stored
    crop shows (a square window, or the whole image of a frame-folder source, stretched as its crop is)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    h, w = frame.shape[:2]
    if (x0, y0, x1, y1) == (0.0, 0.0, float(w), float(h)):
        roi = resize_square(frame, MESH_INPUT)
    else:
        roi = crop_square(frame, (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, MESH_INPUT)
    pts, score = net.mesh(roi)
    norm = pts / MESH_INPUT
    src = np.stack([x0 + norm[:, 0] * (x1 - x0), y0 + norm[:, 1] * (y1 - y0)], axis=1)
    return norm.astype(np.float32), net.blendshapes(src), score


class MeshTracker:
    """The landmark step of one batch: the mesh on each kept frame's window, nothing carried between
    frames or clips (kept frames are far apart in time; a mesh from one would not place the next)."""

    def __init__(self, net: MeshNet):
        self.net = net

    def run(self, frames: list[np.ndarray], boxes: np.ndarray) -> Measured:
        """The mesh, blendshapes and score of every frame inside its box (T, 4)."""
        out = Measured.zeros(len(frames))
        for i, frame in enumerate(frames):
            out.landmarks[i], out.blendshapes[i], out.score[i] = measure_box(self.net, frame, boxes[i])
        return out

    def close(self) -> None:
        pass

    def __enter__(self) -> MeshTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
