"""A fast piecewise-affine image warp driven by control points (OpenCV + scipy).

Triangulate the destination points (Delaunay), rasterise every triangle's index into a label image
with `cv2.fillConvexPoly`, give each pixel its triangle's inverse affine map, then `cv2.remap`.
Pixels on triangle edges can be claimed by a neighbouring sliver triangle during rasterisation,
which extrapolates badly; those (found by negative barycentric coordinates) and any pixel left
unlabelled are re-assigned exactly with `Delaunay.find_simplex`. It gives scikit-image's
PiecewiseAffineTransform's image within rounding for a fraction of its CPU (BENCHMARKS.md, "fineprep
synth: renderer and dataset build"), which is what makes rendering a dataset per test affordable.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def border_points(width: int, height: int, per_side: int = 6) -> np.ndarray:
    """Fixed points on the image border so every pixel lies inside the triangulation."""
    xs = np.linspace(0, width - 1, per_side)
    ys = np.linspace(0, height - 1, per_side)
    top = np.stack([xs, np.zeros_like(xs)], 1)
    bottom = np.stack([xs, np.full_like(xs, height - 1)], 1)
    left = np.stack([np.zeros_like(ys[1:-1]), ys[1:-1]], 1)
    right = np.stack([np.full_like(ys[1:-1], width - 1), ys[1:-1]], 1)
    return np.concatenate([top, bottom, left, right]).astype(np.float64)


class PiecewiseAffineWarp:
    """Backward maps for images of one size: `maps(src, dst)` sends dst pixels to src positions."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        yy, xx = np.mgrid[0:height, 0:width]
        self._x = xx.astype(np.float32)
        self._y = yy.astype(np.float32)

    def maps(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        src = np.asarray(src, np.float64)
        dst = np.asarray(dst, np.float64)
        tri = Delaunay(dst)
        simp = tri.simplices
        # Affine per triangle: [x y 1] @ A = src point, A is (3, 2); solved for all triangles at once.
        d = np.concatenate([dst[simp], np.ones((len(simp), 3, 1))], axis=2)  # (m, 3, 3)
        s = src[simp]  # (m, 3, 2)
        det = np.linalg.det(d)
        ok = np.abs(det) > 1e-9
        aff = np.zeros((len(simp), 3, 2))
        aff[:, 0, 0] = aff[:, 1, 1] = 1.0  # degenerate triangles cover no pixels; identity is harmless
        aff[ok] = np.linalg.solve(d[ok], s[ok])

        label = np.full((self.height, self.width), -1, np.int32)
        corners = np.round(dst[simp] * 16).astype(np.int32)
        for i in np.flatnonzero(ok):
            cv2.fillConvexPoly(label, corners[i], int(i), lineType=cv2.LINE_8, shift=4)

        # Exact re-labelling of unlabelled pixels and of pixels outside their own triangle.
        bary = self._barycentric_min(tri, label)
        bad = (label < 0) | (bary < -1e-3)
        if bad.any():
            pts = np.stack([self._x[bad], self._y[bad]], 1).astype(np.float64)
            found = tri.find_simplex(pts)
            if (found < 0).any():  # outside the hull: take the nearest triangle (border points make this rare)
                miss = found < 0
                found[miss] = tri.find_simplex(np.clip(pts[miss], [0, 0], [self.width - 1, self.height - 1]))
                found[found < 0] = 0
            label[bad] = found
        lab = label.ravel()
        x, y = self._x.ravel(), self._y.ravel()
        aff32 = aff.astype(np.float32)
        map_x = x * aff32[:, 0, 0][lab] + y * aff32[:, 1, 0][lab] + aff32[:, 2, 0][lab]
        map_y = x * aff32[:, 0, 1][lab] + y * aff32[:, 1, 1][lab] + aff32[:, 2, 1][lab]
        return map_x.reshape(label.shape), map_y.reshape(label.shape)

    def _barycentric_min(self, tri: Delaunay, label: np.ndarray) -> np.ndarray:
        lab = np.maximum(label, 0).ravel()
        t = tri.transform.astype(np.float32)  # (m, 3, 2): inverse matrix rows and the offset vector
        px = self._x.ravel() - t[:, 2, 0][lab]
        py = self._y.ravel() - t[:, 2, 1][lab]
        b0 = t[:, 0, 0][lab] * px + t[:, 0, 1][lab] * py
        b1 = t[:, 1, 0][lab] * px + t[:, 1, 1][lab] * py
        return np.minimum(np.minimum(b0, b1), 1.0 - b0 - b1).reshape(label.shape)

    def warp(self, image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The image as it looks when each `src` point has moved to its `dst` position."""
        map_x, map_y = self.maps(src, dst)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
