"""In-the-wild scenes: animated faces composited small into wide frames, with cuts and bad light.

Raw DFER footage is rarely one large frontal face: several people share the frame, faces are 40-150
px high in 640x360 or 1080p video, someone walks through, the editor cuts between shots, and shots
are dark, flat, blurred or heavily compressed. `render_wild` builds such a clip around one *primary*
person, the one the label is about: their face carries the class dynamics (the usual expression
renderer), is the largest and the most central face of every shot (others are at most 0.85x its
height and further from the frame centre) and is present in every frame, so it is what a primary
track rule (long, large, central, confident) should pick. Around it: one to three bystanders
(neutral, with head motion), sometimes one of them walking across the frame behind everyone, taken
from the synthetic identities and from real portraits when given. A clip has 1-3 shots, each with
its own background, layout, face size and degradations; the primary may turn away (the back of the
head replaces the face) for part of a shot. Everything is drawn from the clip's generator.

The truth of every frame (the primary's face box = the extent of its moved 468-point mesh, who is
where, cuts, conditions) comes back as rows for `wild_truth.write`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .clips import CROP, Clip, render_clip
from .faces import Identity, detect, open_landmarker

FRAME_SIZES = ((640, 360), (1920, 1080))
FRAME_SIZE_P = (0.65, 0.35)
FACE_PX = (40.0, 150.0)  # primary face height range
MIN_OTHER_PX = 32.0
MAX_OTHER_RATIO = 0.85  # bystanders are at most this fraction of the primary's face height
MIN_SHOT = 8  # frames
PORTRAIT_EXTS = (".jpg", ".jpeg", ".png")


@functools.lru_cache(maxsize=16)
def _portrait(path: str, size: int) -> Identity | None:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    with open_landmarker() as lm:
        found = detect(lm, rgb)
    if found is None:
        return None
    mesh = found[0][:468]
    lo, hi = mesh.min(0), mesh.max(0)
    centre = (lo + hi) / 2
    side = 2.0 * float(max(hi - lo))
    scale = size / side
    m = np.array([[scale, 0, size / 2 - scale * centre[0]], [0, scale, size / 2 - scale * centre[1]]], np.float32)
    square = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    moved = (mesh * scale + m[:, 2]).astype(np.float32)
    return Identity(name=f"portrait:{Path(path).stem}", image=square, mesh=moved, grey=False, neutralise=False)


def portraits(folder: Path | None, size: int) -> list[Identity]:
    """Real portraits in `folder` made into identities (those where the landmarker finds a face)."""
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PORTRAIT_EXTS)
    return [i for i in (_portrait(str(p), size) for p in files) if i is not None]


# ------------------------------------------------------------------------------------------ drawing
def _colour(hue: float, sat: float, val: float) -> np.ndarray:
    hsv = np.array([[[hue % 180, sat, val]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def background(width: int, height: int, hue: float, rng: np.random.Generator) -> np.ndarray:
    """A room-like backdrop: a vertical gradient, soft blotches and a few furniture blocks (no faces)."""
    w, h = max(width // 8, 8), max(height // 8, 8)
    top, bottom = _colour(hue, rng.uniform(40, 160), rng.uniform(90, 220)), _colour(hue, rng.uniform(40, 160),
                                                                                     rng.uniform(40, 150))
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = top + (bottom - top) * ramp + np.zeros((h, w, 3), np.float32)
    blotch = cv2.resize(rng.normal(0, 14, (5, 9, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += blotch
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 3)), y0 + int(rng.integers(h // 10, h // 2))
        c = _colour(hue + rng.uniform(-30, 30), rng.uniform(30, 200), rng.uniform(30, 230))
        cv2.rectangle(img, (x0, y0), (x1, y1), c.tolist(), -1)
    img = cv2.resize(np.clip(img, 0, 255), (width, height), interpolation=cv2.INTER_LINEAR)
    return img


@dataclass
class Actor:
    """One person in one shot: rendered frames, where the face centre goes, how big, how drawn."""

    name: str
    clip: Clip
    height: float  # face box height in the frame, px
    path: np.ndarray  # (shot_len, 2) face-centre positions in the frame
    shirt: np.ndarray
    hair: np.ndarray
    away: np.ndarray | None = None  # (shot_len,) bool: the back of the head instead of the face

    def scale(self) -> float:
        b = self.clip.face_boxes[0]
        return self.height / float(b[3] - b[1])

    def face_box(self, i: int, j: int) -> np.ndarray:
        """Face box in the frame at clip frame i (shot frame j)."""
        s = self.scale()
        b = self.clip.face_boxes[i]
        c0 = (self.clip.face_boxes[0][:2] + self.clip.face_boxes[0][2:]) / 2
        off = self.path[j] - s * c0
        return np.array([b[0] * s + off[0], b[1] * s + off[1], b[2] * s + off[0], b[3] * s + off[1]], np.float32)


def _head_ellipse(box: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    w, h = box[2] - box[0], box[3] - box[1]
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - 0.12 * h)
    return centre, (0.72 * w, 0.68 * h)


def draw_actor(frame: np.ndarray, actor: Actor, i: int, j: int) -> np.ndarray:
    """Composite the actor (torso, then head) into `frame` (float32, in place); returns the face box."""
    H, W = frame.shape[:2]
    box = actor.face_box(i, j)
    fh = float(box[3] - box[1])
    (ecx, ecy), (ax, ay) = _head_ellipse(box)
    # Torso: a soft ellipse under the head.
    shoulders = int(box[3] + 0.95 * fh)
    cv2.ellipse(frame, (int(ecx), shoulders), (int(1.4 * fh), int(0.7 * fh)), 0, 180, 360,
                actor.shirt.tolist(), -1, lineType=cv2.LINE_AA)
    cv2.rectangle(frame, (int(ecx - 1.4 * fh), shoulders), (int(ecx + 1.4 * fh), H), actor.shirt.tolist(), -1)
    cv2.rectangle(frame, (int(ecx - 0.22 * fh), int(box[3] - 0.1 * fh)), (int(ecx + 0.22 * fh), shoulders),
                  (actor.shirt * 0.5 + 60).tolist(), -1)
    x0, y0 = int(np.floor(ecx - ax * 1.15)), int(np.floor(ecy - ay * 1.15))
    x1, y1 = int(np.ceil(ecx + ax * 1.15)), int(np.ceil(ecy + ay * 1.15))
    x0c, y0c, x1c, y1c = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if x1c <= x0c or y1c <= y0c:
        return box
    pw, ph = x1c - x0c, y1c - y0c
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (int(round(ecx - x0c)), int(round(ecy - y0c))), (max(int(ax), 1), max(int(ay), 1)), 0, 0, 360,
                1.0, -1, lineType=cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.05 * fh, 0.8))[:, :, None]
    if actor.away is not None and actor.away[j]:
        rng = np.random.default_rng(int(i) * 7919 + int(box[0]))
        patch = actor.hair + rng.normal(0, 10, (ph, pw, 1)).astype(np.float32)
    else:
        s = actor.scale()
        b0 = actor.clip.face_boxes[0]
        c0 = (b0[:2] + b0[2:]) / 2
        off = actor.path[j] - s * c0 - np.array([x0c, y0c])
        m = np.array([[s, 0, off[0]], [0, s, off[1]]], np.float32)
        src = actor.clip.frames[i]
        patch = cv2.warpAffine(src, m, (pw, ph), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    region = frame[y0c:y1c, x0c:x1c]
    region[:] = region * (1 - mask) + patch * mask
    return box


# ---------------------------------------------------------------------------------- degradations
CONDITIONS = {"dark": 0.25, "low_contrast": 0.2, "blur": 0.3, "compressed": 0.35}


def draw_conditions(rng: np.random.Generator) -> dict[str, float]:
    """A shot's degradations, at most two. Dark and low contrast never stack: together they leave a face a
    few grey levels deep after video compression, which no person could read either."""
    out = {}
    if rng.random() < CONDITIONS["dark"]:
        out["dark"] = float(rng.uniform(0.3, 0.5))
    elif rng.random() < CONDITIONS["low_contrast"]:
        out["low_contrast"] = float(rng.uniform(0.4, 0.6))
    if rng.random() < CONDITIONS["blur"]:
        out["blur"] = float(rng.uniform(0.8, 1.8))
    if rng.random() < CONDITIONS["compressed"]:
        out["compressed"] = float(int(rng.integers(12, 31)))  # JPEG quality
    while len(out) > 2:  # three at once (dark, blurred and blocky) hides a face from people too
        del out[sorted(out)[int(rng.integers(len(out)))]]
    return out


def degrade(frame: np.ndarray, cond: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Apply a shot's conditions to one composited frame (float32) and return it as uint8 RGB."""
    f = frame
    if "low_contrast" in cond:
        mean = f.mean(axis=(0, 1), keepdims=True)
        f = mean + (f - mean) * cond["low_contrast"]
    if "dark" in cond:
        f = f * cond["dark"]
        f = f + rng.normal(0, 3.0, f.shape[:2] + (1,)).astype(np.float32)
    if "blur" in cond:
        f = cv2.GaussianBlur(f, (0, 0), cond["blur"])
    out = np.clip(f, 0, 255).astype(np.uint8)
    if "compressed" in cond:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(cond["compressed"])])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


# ------------------------------------------------------------------------------------------ layout
def shot_lengths(n: int, rng: np.random.Generator) -> list[int]:
    k = max(1, min(int(rng.integers(1, 4)), n // MIN_SHOT))
    extra = n - MIN_SHOT * k
    if k == 1 or extra < 0:
        return [n]
    share = np.floor(rng.dirichlet(np.ones(k)) * extra).astype(int)
    share[-1] += extra - int(share.sum())
    return [MIN_SHOT + int(s) for s in share]


def _overlaps(a: np.ndarray, b: np.ndarray, pad: float) -> bool:
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])


def _person_rect(cx: float, cy: float, h: float) -> np.ndarray:
    """Head (with hair) and shoulders around a face centre: what must not cover another face."""
    return np.array([cx - 1.0 * h, cy - 1.0 * h, cx + 1.0 * h, cy + 1.4 * h])


def _looks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shirt = _colour(rng.uniform(0, 180), rng.uniform(40, 220), rng.uniform(40, 230))
    hair = _colour(rng.uniform(5, 25), rng.uniform(40, 160), rng.uniform(20, 90))
    return shirt, hair


def layout_shot(width: int, height: int, length: int, primary: Clip, crowd: list[Clip], names: list[str],
                rng: np.random.Generator) -> tuple[Actor, list[Actor]]:
    """Place the primary and 1-3 others in one shot; returns (primary, others back to front)."""
    heights = primary.face_boxes[:, 3] - primary.face_boxes[:, 1]
    growth = float(heights.max() / heights[0])  # an opening jaw makes the face taller than at frame 0
    hp = float(rng.uniform(FACE_PX[0], max(FACE_PX[1] / growth, FACE_PX[0])))
    pc = np.array([width / 2 + rng.uniform(-0.12, 0.12) * width, rng.uniform(0.38, 0.55) * height])
    pc[1] = float(np.clip(pc[1], 0.9 * hp, height - 1.2 * hp))
    drift = rng.uniform(-0.03, 0.03, 2) * np.array([width, height * 0.3])
    t = np.linspace(0, 1, length)[:, None]
    shirt, hair = _looks(rng)
    away = None
    if rng.random() < 0.3 and length >= 10:
        span = int(round(rng.uniform(0.25, 0.4) * length))
        start = int(rng.integers(1, length - span))
        away = np.zeros(length, bool)
        away[start:start + span] = True
    prim = Actor("primary", primary, hp, pc + drift * t, shirt, hair, away)

    others: list[Actor] = []
    rects = [_person_rect(*pc, hp)]
    walker_wanted = rng.random() < 0.5
    want = int(rng.integers(1, 4))
    d_primary = abs(pc[0] - width / 2) + 0.05 * width
    for k in range(min(want, len(crowd))):
        h = float(max(MIN_OTHER_PX, rng.uniform(0.55, MAX_OTHER_RATIO) * hp))
        sh, hr = _looks(rng)
        if walker_wanted and k == 0:
            y = float(rng.uniform(0.3, 0.65) * height)
            x_from, x_to = (-0.08 * width, 1.08 * width) if rng.random() < 0.5 else (1.08 * width, -0.08 * width)
            path = np.stack([np.linspace(x_from, x_to, length), np.full(length, y)], 1)
            others.insert(0, Actor(names[k], crowd[k], h, path, sh, hr))
            continue
        for _ in range(40):
            h = max(MIN_OTHER_PX, h * 0.97)  # a crowded frame: try smaller people
            cx, cy = rng.uniform(0.06, 0.94) * width, rng.uniform(0.25, 0.75) * height
            rect = _person_rect(cx, cy, h)
            inside = cx - h > 0 and cx + h < width and cy - 0.7 * h > 0 and cy + 0.7 * h < height
            if inside and abs(cx - width / 2) > d_primary and not any(_overlaps(rect, r, 4) for r in rects):
                rects.append(rect)
                sway = rng.uniform(-0.01, 0.01, 2) * width
                others.append(Actor(names[k], crowd[k], h, np.array([cx, cy]) + sway * t, sh, hr))
                break
    if not others and crowd:  # nobody fitted beside the primary: someone walks through instead
        h = float(max(MIN_OTHER_PX, 0.6 * hp))
        y = float(rng.uniform(0.3, 0.65) * height)
        path = np.stack([np.linspace(-0.08 * width, 1.08 * width, length), np.full(length, y)], 1)
        others.append(Actor(names[0], crowd[0], h, path, *_looks(rng)))
    return prim, others


def _square_crop(frame: np.ndarray, box: np.ndarray, size: int = CROP) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = 1.6 * float(max(box[2] - box[0], box[3] - box[1]))
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float32)
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def render_wild(primary: Identity, label: str, rng: np.random.Generator, frames_range: tuple[int, int],
                crowd_pool: list[Identity]) -> tuple[Clip, list[dict]]:
    """One wild clip of `label` around `primary`; returns the clip (wide frames, primary crops) and truth rows."""
    base = render_clip(primary, label, rng, frames_range)
    n = len(base.frames)
    width, height = FRAME_SIZES[int(rng.choice(len(FRAME_SIZES), p=FRAME_SIZE_P))]
    pool = [p for p in crowd_pool if p.name != primary.name]
    order = rng.permutation(len(pool))[:3]
    names = [pool[int(k)].name for k in order]
    crowd = [render_clip(pool[int(k)], "neutral", rng, (n, n)) for k in order]
    lengths = shot_lengths(n, rng)
    frames, crops, rows = [], [], []
    hue = float(rng.uniform(0, 180))
    start = 0
    for shot, length in enumerate(lengths):
        hue = (hue + rng.uniform(50, 130)) % 180
        bg = background(width, height, hue, rng)
        prim, others = layout_shot(width, height, length, base, crowd, names, rng)
        cond = draw_conditions(rng)
        cond_name = "+".join(sorted(cond)) or "clean"
        for j in range(length):
            i = start + j
            canvas = bg.copy()
            other_boxes = [(o.name, draw_actor(canvas, o, i, j)) for o in others]
            pbox = draw_actor(canvas, prim, i, j)
            frame = degrade(canvas, cond, rng)
            frames.append(frame)
            crops.append(_square_crop(frame, pbox))
            visible = [(nm, b) for nm, b in other_boxes
                       if b[2] > 0 and b[0] < width and b[3] > 0 and b[1] < height]
            turned = bool(prim.away is not None and prim.away[j])
            rows.append({
                "frame": i, "shot": shot, "cut": shot > 0 and j == 0, "width": width, "height": height,
                "label": label, "primary": primary.name,
                "x0": float(pbox[0]), "y0": float(pbox[1]), "x1": float(pbox[2]), "y1": float(pbox[3]),
                "face_px": float(pbox[3] - pbox[1]), "turned_away": turned,
                "identities": [nm for nm, _ in visible] + [primary.name],
                "others": [{"identity": nm, "x0": float(b[0]), "y0": float(b[1]), "x1": float(b[2]),
                            "y1": float(b[3])} for nm, b in visible],
                "conditions": cond_name,
            })
        start += length
    cuts = [int(c) for c in np.cumsum(lengths)[:-1]]
    meta = {"scene": {"width": width, "height": height, "cuts": cuts,
                      "people": sorted({primary.name, *names})}}
    clip = Clip(frames=frames, crops=crops, fps=base.fps, label=label, identity=primary.name,
                intensity=base.intensity, onset=base.onset, apex=base.apex, meta=meta,
                face_boxes=np.array([[r["x0"], r["y0"], r["x1"], r["y1"]] for r in rows], np.float32))
    return clip, rows
