"""Render one expression clip from one face: expression warp, mouth cavity, head motion, light drift.

The expression intensity follows an eased onset-to-apex curve, then relaxes slightly (to 0.85 by
the last frame), so the apex frame is the one peak and the last frame still shows a strong expression. Backward maps are computed exactly at a few intensity
levels and interpolated linearly in between, which makes a frame cost a remap instead of a
triangulation. Nearly every pixel stays within a fraction of a pixel of the exact map; the few that do
not lie where the triangulation changes between two levels (bench/synth_bench.py; numbers in
BENCHMARKS.md, "fineprep synth: renderer and dataset build").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .expressions import (
    LOWER_INNER_LIP,
    MESH_POINTS,
    NEUTRALISE,
    UPPER_INNER_LIP,
    FaceFrame,
    recipe,
)
from .faces import Identity
from .warp import PiecewiseAffineWarp, border_points

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
CROP = 224
RELAX = 0.15  # how far the expression eases back from the apex by the last frame
LEVELS = 7  # exact map computations per clip; frames in between interpolate
CAVITY_TOP = np.array([30, 10, 12], np.float32)
CAVITY_BOTTOM = np.array([95, 38, 40], np.float32)


@dataclass
class Clip:
    """Rendered frames (RGB) and the facts the layout writers and provenance need."""

    frames: list[np.ndarray]
    crops: list[np.ndarray]
    fps: int
    label: str
    identity: str
    intensity: float
    onset: int
    apex: int
    meta: dict = field(default_factory=dict)
    face_boxes: np.ndarray | None = None  # (n, 4) x0, y0, x1, y1 of the moved face mesh per frame, in px


@functools.lru_cache(maxsize=256)
def _frame_of(name: str, size: int, mesh_bytes: bytes) -> FaceFrame:
    return FaceFrame(np.frombuffer(mesh_bytes, np.float32).reshape(-1, 2))


def face_frame(identity: Identity) -> FaceFrame:
    return _frame_of(identity.name, identity.image.shape[0], identity.mesh.astype(np.float32).tobytes())


def control_points(ff: FaceFrame, mesh: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Mesh points, a ring outside the face oval, a coarse grid outside it, fixed border points.

    Returns the points (px) and how many of them are fixed (the last ones).
    """
    mesh = np.asarray(mesh, np.float64)[:MESH_POINTS]
    oval = mesh[list(FACE_OVAL)]
    centre = oval.mean(0)
    outward = oval - centre
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    ring = oval + outward * 0.5 * ff.iod
    step = 0.3 * ff.iod
    gx, gy = np.meshgrid(np.arange(step / 2, size, step), np.arange(step / 2, size, step))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    ring_poly = ring.astype(np.float32).reshape(-1, 1, 2)
    keep = np.array([cv2.pointPolygonTest(ring_poly, (float(x), float(y)), True) < -0.15 * ff.iod
                     for x, y in grid], bool)
    grid = grid[keep]
    border = border_points(size, size)
    return np.concatenate([mesh, ring, grid, border]), len(border)


def _ease(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _cavity(img: np.ndarray, dst_mesh: np.ndarray, src_gap: float, iod: float, grey: bool) -> None:
    """Paint a soft dark mouth cavity inside the inner lips once they have parted."""
    gap = float(np.linalg.norm(dst_mesh[14] - dst_mesh[13])) / iod
    alpha = float(np.clip((gap - src_gap - 0.02) / 0.10, 0.0, 1.0))
    if alpha <= 0:
        return
    poly = np.concatenate([dst_mesh[list(UPPER_INNER_LIP)], dst_mesh[list(LOWER_INNER_LIP)][::-1]])
    x0, y0 = np.floor(poly.min(0)).astype(int) - 3
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 4
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.015 * iod, 0.6)) * alpha
    ramp = np.linspace(0, 1, y1 - y0, dtype=np.float32)[:, None, None]
    colour = CAVITY_TOP + (CAVITY_BOTTOM - CAVITY_TOP) * ramp
    if grey:
        colour = np.repeat(colour.mean(-1, keepdims=True), 3, axis=-1)
    patch = img[y0:y1, x0:x1].astype(np.float32)
    m = mask[:, :, None]
    img[y0:y1, x0:x1] = np.clip(patch * (1 - m) + colour * m, 0, 255).astype(np.uint8)


def _align(points: np.ndarray) -> np.ndarray:
    """Similarity that puts the eye centres of a mesh at fixed places in a 224 x 224 crop."""
    right = (points[33] + points[133]) / 2
    left = (points[362] + points[263]) / 2
    dst_r, dst_l = np.array([0.34 * CROP, 0.40 * CROP]), np.array([0.66 * CROP, 0.40 * CROP])
    v_src, v_dst = left - right, dst_l - dst_r
    scale = np.linalg.norm(v_dst) / np.linalg.norm(v_src)
    ang = math.atan2(v_dst[1], v_dst[0]) - math.atan2(v_src[1], v_src[0])
    c, s = scale * math.cos(ang), scale * math.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    t = dst_r - rot @ right
    return np.hstack([rot, t[:, None]])


@dataclass
class _Motion:
    """Head motion (a similarity eased from the identity to a random pose) and a smooth light drift."""

    ang: float
    shift: np.ndarray
    scale: float
    gains: np.ndarray
    offsets: np.ndarray
    wobble: float

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int) -> _Motion:
        return cls(ang=rng.uniform(-3, 3), shift=rng.uniform(-4, 4, size=2) * size / 256,
                   scale=1 + rng.uniform(-0.03, 0.03), gains=rng.uniform(0.9, 1.1, size=2),
                   offsets=rng.uniform(-8, 8, size=2), wobble=rng.uniform(0, 2 * math.pi))

    def apply(self, img: np.ndarray, i: int, n: int, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame `i` of `n` moved and lit; also the 2 x 3 matrix that moved it."""
        size = img.shape[0]
        h = 0.5 - 0.5 * math.cos(math.pi * i / max(n - 1, 1))
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), self.ang * h, 1 + (self.scale - 1) * h)
        m[:, 2] += self.shift * h
        img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        gain = self.gains[0] + (self.gains[1] - self.gains[0]) * h + 0.02 * math.sin(self.wobble + 2 * math.pi * i / 40)
        offset = self.offsets[0] + (self.offsets[1] - self.offsets[0]) * h
        return cv2.convertScaleAbs(img, alpha=gain, beta=offset), m


def _intensity(n: int, onset: int, apex: int, neutral: bool) -> np.ndarray:
    """Expression intensity per frame: eased onset to apex, then relaxing to 1 - RELAX by the last frame."""
    if neutral:
        return np.zeros(n)
    frames_idx = np.arange(n)
    t = _ease((frames_idx - onset) / max(apex - onset, 1))
    # After the apex the expression relaxes a little (to 0.85), so the apex is the one peak frame.
    return np.where(frames_idx > apex, 1.0 - RELAX * _ease((frames_idx - apex) / max(n - 1 - apex, 1)), t)


class _LevelMaps:
    """Backward maps at LEVELS exact intensities, computed on first use; frames in between interpolate."""

    def __init__(self, warp: PiecewiseAffineWarp, src: np.ndarray, ff: FaceFrame, base: np.ndarray,
                 expr: np.ndarray):
        self.warp, self.src, self.ff, self.base, self.expr = warp, src, ff, base, expr
        self.levels = np.linspace(0.0, 1.0, LEVELS)
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _at(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        if level not in self.cache:
            dst = self.src + self.ff.to_px_delta(self.base + self.levels[level] * self.expr)
            self.cache[level] = self.warp.maps(self.src, dst)
        return self.cache[level]

    def at(self, ti: float) -> tuple[np.ndarray, np.ndarray]:
        pos = ti * (LEVELS - 1)
        lo = min(int(math.floor(pos)), LEVELS - 2)
        frac = pos - lo
        mx0, my0 = self._at(lo)
        if frac <= 1e-6:
            return mx0, my0
        mx1, my1 = self._at(lo + 1)
        return mx0 + (mx1 - mx0) * frac, my0 + (my1 - my0) * frac


def render_clip(identity: Identity, label: str, rng: np.random.Generator, frames_range: tuple[int, int] = (20, 48),
                fps_choices: tuple[int, ...] = (25, 30)) -> Clip:
    """One clip of `label` on `identity`, fully determined by the state of `rng`."""
    rec = recipe(label)
    size = identity.image.shape[0]
    n = int(rng.integers(frames_range[0], frames_range[1] + 1))
    fps = int(rng.choice(fps_choices))
    k = float(rec.intensity * rng.uniform(0.9, 1.1))
    onset = int(round(rng.uniform(0.05, 0.3) * (n - 1)))
    apex = int(round(rng.uniform(0.65, 0.95) * (n - 1)))
    onset = max(0, min(onset, n - 3))
    apex = min(max(apex, onset + 2), n - 1)
    t = _intensity(n, onset, apex, rec.name == "neutral")
    motion = _Motion.draw(rng, size)

    ff = face_frame(identity)
    src, n_fixed = control_points(ff, identity.mesh, size)
    uv = ff.to_uv(src)
    base = ff.field(uv, NEUTRALISE) if identity.neutralise else np.zeros_like(uv)
    expr = ff.field(uv, rec.actions, k) if rec.actions else np.zeros_like(uv)
    base[-n_fixed:] = 0
    expr[-n_fixed:] = 0
    moves = bool(np.abs(base).max() > 0 or np.abs(expr).max() > 0)
    src_gap = float(np.linalg.norm(identity.mesh[14] - identity.mesh[13])) / ff.iod
    maps = _LevelMaps(PiecewiseAffineWarp(size, size), src, ff, base, expr)

    frames, crops, boxes = [], [], []
    for i in range(n):
        ti = float(t[i])
        dst = src + ff.to_px_delta(base + ti * expr)
        if moves:
            mx, my = maps.at(ti)
            img = cv2.remap(identity.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            _cavity(img, dst[:MESH_POINTS], src_gap, ff.iod, identity.grey)
        else:
            img = identity.image.copy()
        img, m = motion.apply(img, i, n, ff.origin)
        frames.append(img)
        moved = np.hstack([dst[:MESH_POINTS], np.ones((MESH_POINTS, 1))]) @ m.T
        boxes.append([*moved.min(0), *moved.max(0)])
        crops.append(cv2.warpAffine(img, _align(moved), (CROP, CROP), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101))
    return Clip(frames=frames, crops=crops, fps=fps, label=label, identity=identity.name, intensity=round(k, 4),
                onset=onset, apex=apex, face_boxes=np.asarray(boxes, np.float32))
