"""Expression recipes as smooth displacement fields over the face mesh, in inter-ocular units.

Every displacement is given in a face frame (origin at the mid-eye point, u along the eye line,
v downwards, unit = inter-ocular distance, IOD), so one recipe behaves the same whatever the face
size. A recipe is a sum of actions: Gaussian bumps around anchor landmarks, a brow field with a
smooth inner-to-outer profile, a jaw drop for everything below the inner-lip line, and eyelid moves.
Non-lid motion fades to zero at the eye contour and may not cross more than 3/4 of the way to it,
which keeps the eyes intact when brows come down. Amplitudes follow the measured recipes in the
project notes (k = 1); a clip scales them by its intensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MediaPipe face-mesh indices (subject's right side is on the image left, u < 0).
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
UPPER_LIDS = ((246, 161, 160, 159, 158, 157, 173), (466, 388, 387, 386, 385, 384, 398))
LOWER_LIDS = ((7, 163, 144, 145, 153, 154, 155), (249, 390, 373, 374, 380, 381, 382))
LID_PROFILE = (0.45, 0.75, 0.92, 1.0, 0.92, 0.75, 0.45)
BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324)
UPPER_OUTER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409)
LOWER_OUTER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375)
CORNERS = (61, 291)
INNER_CORNERS = (78, 308)
CHEEKS = (205, 425, 50, 280)
NOSE_WINGS = (129, 358, 98, 327)
LATERAL_UPPER_LIP = (40, 39, 270, 269)
LOWER_LIP_LOW = (17, 84, 314)
CHIN = 152
MESH_POINTS = 468


@dataclass(frozen=True)
class Bump:
    """Anchors move by (out, up) IOD with a Gaussian falloff of width sigma; per face side."""

    anchors: tuple[int, ...]
    up: float = 0.0
    out: float = 0.0
    sigma: float = 0.14
    lip_side: str | None = None  # "upper" / "lower": only points on that side of the inner-lip line
    face_side: int = 0  # 0 both, +1 only u > 0, -1 only u < 0 (one-sided expressions)


@dataclass(frozen=True)
class Brows:
    inner_up: float = 0.0
    outer_up: float = 0.0
    inner_in: float = 0.0
    outer_in: float = 0.0
    sigma: float = 0.15


@dataclass(frozen=True)
class Jaw:
    drop: float


@dataclass(frozen=True)
class Lids:
    upper_up: float = 0.0
    lower_up: float = 0.0


@dataclass(frozen=True)
class Recipe:
    name: str
    actions: tuple
    intensity: float = 1.0  # the clip's peak k
    summary: str = ""


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("neutral", (), 1.0, "no facial action; only head motion and light"),
    Recipe("happiness", (
        Bump(CORNERS, up=0.12, out=0.08, sigma=0.14), Bump(CHEEKS, up=0.04, sigma=0.15), Lids(lower_up=0.025),
    ), 1.0, "lip corners pulled up and out, cheeks raised"),
    Recipe("surprise", (
        Jaw(0.40), Bump(CORNERS, out=-0.04, sigma=0.12), Brows(inner_up=0.14, outer_up=0.14), Lids(upper_up=0.06),
    ), 1.25, "jaw dropped, brows raised, upper lids raised"),
    Recipe("sadness", (
        Bump(CORNERS, up=-0.11, out=-0.02, sigma=0.12), Bump(LOWER_LIP_LOW, up=0.05, sigma=0.10, lip_side="lower"),
        Brows(inner_up=0.12, inner_in=0.03, outer_up=-0.02),
    ), 1.0, "lip corners down, inner brows raised"),
    Recipe("anger", (
        Brows(inner_up=-0.13, inner_in=0.09, outer_up=-0.08, outer_in=0.06), Lids(upper_up=-0.03, lower_up=0.02),
        Bump(CORNERS, up=-0.02, out=-0.03, sigma=0.12),
    ), 1.25, "brows lowered and drawn together, lids tightened"),
    Recipe("disgust", (
        Bump(LATERAL_UPPER_LIP, up=0.08, sigma=0.08, lip_side="upper"), Bump(NOSE_WINGS, up=0.06, out=-0.02, sigma=0.10),
        Brows(inner_up=-0.05, inner_in=0.03), Lids(lower_up=0.025), Bump(CORNERS, up=-0.03, out=-0.02, sigma=0.12),
    ), 1.25, "upper lip raised, nose wings up, inner brows lowered"),
    Recipe("fear", (
        Brows(inner_up=0.15, outer_up=0.08, inner_in=0.04, outer_in=0.04, sigma=0.14), Lids(upper_up=0.06),
        Jaw(0.10), Bump(CORNERS, up=-0.05, out=0.15, sigma=0.16),
    ), 1.25, "brows raised and drawn together, lids wide, mouth stretched"),
    Recipe("contempt", (
        Bump((291,), up=0.10, out=0.06, sigma=0.14, face_side=1), Lids(lower_up=0.015),
    ), 1.0, "one lip corner raised and tightened"),
    Recipe("anxiety", (
        Brows(inner_up=0.10, inner_in=0.04), Bump(CORNERS, out=-0.03, sigma=0.12),
        Bump(LOWER_LIP_LOW, up=0.03, sigma=0.10, lip_side="lower"), Lids(upper_up=0.03),
    ), 1.1, "inner brows raised, lips pressed"),
    Recipe("helplessness", (
        Brows(inner_up=0.12, outer_up=0.06), Bump(CORNERS, up=-0.09, sigma=0.13), Jaw(0.05),
    ), 1.1, "brows raised, lip corners down, mouth slack"),
    Recipe("disappointment", (
        Bump(CORNERS, up=-0.10, out=-0.02, sigma=0.13), Lids(upper_up=-0.04), Brows(inner_up=0.05),
        Bump(LOWER_LIP_LOW, up=0.03, sigma=0.10, lip_side="lower"),
    ), 1.1, "lip corners down, lids lowered"),
)}

# A smiling source with teeth showing: corners back down and in before any recipe.
NEUTRALISE = (Bump(CORNERS, up=-0.125, out=-0.125, sigma=0.15),)


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"no expression recipe for class {name!r}; known: {', '.join(RECIPES)}") from None


class FaceFrame:
    """The mid-eye face frame of one source mesh, and the fields evaluated in it."""

    def __init__(self, mesh: np.ndarray):
        mesh = np.asarray(mesh, np.float64)[:MESH_POINTS]
        right = (mesh[33] + mesh[133]) / 2
        left = (mesh[362] + mesh[263]) / 2
        self.iod = float(np.linalg.norm(left - right))
        self.origin = (left + right) / 2
        self.ex = (left - right) / self.iod
        self.ey = np.array([-self.ex[1], self.ex[0]])
        self.mesh_uv = self.to_uv(mesh)
        uv = self.mesh_uv
        order = np.argsort(uv[list(UPPER_INNER_LIP), 0])
        self.lip_u = uv[list(UPPER_INNER_LIP), 0][order]
        self.lip_v = uv[list(UPPER_INNER_LIP), 1][order]
        self.corner_u = float(np.mean(np.abs(uv[list(INNER_CORNERS), 0])))
        self.chin_v = float(uv[CHIN, 1])
        self.eye_uv = uv[list(RIGHT_EYE + LEFT_EYE)]
        self.brow_uv = uv[list(BROWS)]
        au = np.abs(self.brow_uv[:, 0])
        self.brow_profile = np.zeros(len(BROWS))  # 0 at the inner end, 1 at the outer end
        for half in (self.brow_uv[:, 0] < 0, self.brow_uv[:, 0] >= 0):
            lo, hi = au[half].min(), au[half].max()
            self.brow_profile[half] = (au[half] - lo) / max(hi - lo, 1e-6)

    def to_uv(self, px: np.ndarray) -> np.ndarray:
        rel = np.asarray(px, np.float64) - self.origin
        return np.stack([rel @ self.ex, rel @ self.ey], axis=1) / self.iod

    def to_px_delta(self, duv: np.ndarray) -> np.ndarray:
        return (duv[:, :1] * self.ex + duv[:, 1:2] * self.ey) * self.iod

    def lip_line(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.lip_u, self.lip_v)

    # --- fields: all take points in uv (N, 2) whose first 468 rows are the mesh -------------------
    def field(self, uv: np.ndarray, actions, k: float = 1.0) -> np.ndarray:
        """Displacement (N, 2) in IOD units of all points for these actions at intensity k."""
        free = np.zeros_like(uv)
        lids = np.zeros_like(uv)
        for act in actions:
            if isinstance(act, Lids):
                lids += self._lids(uv, act)
            elif isinstance(act, Bump):
                free += self._bump(uv, act)
            elif isinstance(act, Brows):
                free += self._brows(uv, act)
            elif isinstance(act, Jaw):
                free += self._jaw(uv, act)
            else:
                raise TypeError(f"unknown action {act!r}")
        free = self._protect_eyes(uv, free * k)
        return free + lids * k

    def _bump(self, uv: np.ndarray, b: Bump) -> np.ndarray:
        out = np.zeros_like(uv)
        anchors = self.mesh_uv[list(b.anchors)]
        for sign in (-1.0, 1.0):
            if b.face_side and sign != b.face_side:
                continue
            pts = anchors[np.sign(anchors[:, 0]) == sign]
            if len(pts) == 0:
                continue
            d2 = ((uv[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(1)
            w = np.exp(-d2 / (2 * b.sigma**2))
            if b.lip_side:
                w = w * self._lip_side_weight(uv, b.lip_side)
            out[:, 0] += w * b.out * sign
            out[:, 1] -= w * b.up
        return out

    def _lip_side_weight(self, uv: np.ndarray, side: str) -> np.ndarray:
        below = uv[:, 1] - self.lip_line(uv[:, 0])
        lower = np.clip(below / 0.03 + 0.5, 0.0, 1.0)
        lower[list(LOWER_INNER_LIP + LOWER_OUTER_LIP)] = 1.0
        lower[list(UPPER_INNER_LIP + UPPER_OUTER_LIP)] = 0.0
        return lower if side == "lower" else 1.0 - lower

    def _brows(self, uv: np.ndarray, b: Brows) -> np.ndarray:
        prof = self.brow_profile
        up = b.inner_up + (b.outer_up - b.inner_up) * prof
        inward = b.inner_in + (b.outer_in - b.inner_in) * prof
        side = np.sign(self.brow_uv[:, 0])
        disp = np.stack([-inward * side, -up], axis=1)  # (20, 2)
        d2 = ((uv[:, None, :] - self.brow_uv[None, :, :]) ** 2).sum(-1)
        g = np.exp(-d2 / (2 * b.sigma**2))
        envelope = g.max(1)
        interp = (g @ disp) / np.maximum(g.sum(1), 1e-12)[:, None]
        # Taper the inward pull at the midline so the glabella is not folded.
        taper = np.clip(np.abs(uv[:, 0]) / 0.25, 0.0, 1.0)
        interp[:, 0] *= taper
        return interp * envelope[:, None]

    def _jaw(self, uv: np.ndarray, j: Jaw) -> np.ndarray:
        u, v = uv[:, 0], uv[:, 1]
        below = v - self.lip_line(u)
        lateral = np.exp(-((u / 0.75) ** 2))
        inside = np.clip(1.0 - (np.abs(u) - self.corner_u) / 0.15, 0.0, 1.0)
        step = (below > 0).astype(np.float64)
        step[list(LOWER_INNER_LIP + LOWER_OUTER_LIP)] = 1.0
        step[list(UPPER_INNER_LIP + UPPER_OUTER_LIP)] = 0.0
        step[list(CORNERS)] = 0.45
        x = np.clip(below / 0.35, 0.0, 1.0)
        ramp = x * x * (3 - 2 * x)
        w = lateral * (inside * step + (1 - inside) * ramp)
        under_chin = np.clip(v - self.chin_v, 0.0, None)
        w = w * np.exp(-((under_chin / 0.8) ** 2))
        return np.stack([np.zeros_like(w), w * j.drop], axis=1)

    def _lids(self, uv: np.ndarray, lids: Lids) -> np.ndarray:
        out = np.zeros_like(uv)
        for groups, amount in ((UPPER_LIDS, lids.upper_up), (LOWER_LIDS, lids.lower_up)):
            if amount:
                for group in groups:
                    out[list(group), 1] -= np.asarray(LID_PROFILE) * amount
        return out

    def _protect_eyes(self, uv: np.ndarray, disp: np.ndarray) -> np.ndarray:
        diff = self.eye_uv[None, :, :] - uv[:, None, :]
        dist = np.sqrt((diff**2).sum(-1))
        nearest = dist.argmin(1)
        dmin = dist[np.arange(len(uv)), nearest]
        disp = disp * np.clip(dmin / 0.06, 0.0, 1.0)[:, None]
        # Barrier: motion toward the nearest eye-contour point stays below 3/4 of the distance to it.
        towards = diff[np.arange(len(uv)), nearest] / np.maximum(dmin, 1e-9)[:, None]
        comp = (disp * towards).sum(1)
        excess = np.clip(comp - 0.75 * dmin, 0.0, None)
        return disp - excess[:, None] * towards
