"""Middle-level cues drawn as images, on the fly, so CLIP's image encoder can read them.

The store keeps raw parsing class maps and landmark coordinates; the trainer draws them: parsing
as a colour overlay on the frame (background left as is), landmarks as yellow dots on the frame.
Both take and return uint8 frames shaped (T, 3, H, W): integer drawing is several times faster than
float, and the DataLoader ships a quarter of the bytes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from fineschema import layout

# A colour per class name, covering every parser's classes (fineschema.layout.PARSING_CLASS_SETS).
# Left and right parts differ so the image encoder can tell them apart; background is never painted.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "skin": (255, 204, 153),
    "brows": (153, 51, 0),
    "eyes": (0, 153, 255),
    "nose": (255, 153, 204),
    "lips": (204, 0, 51),
    "inner_mouth": (102, 0, 153),
    "left_brow": (153, 51, 0),
    "right_brow": (204, 153, 0),
    "left_eye": (0, 153, 255),
    "right_eye": (0, 204, 102),
    "upper_lip": (204, 0, 51),
    "lower_lip": (255, 51, 153),
    "hair": (51, 51, 153),
}
YELLOW = (255, 255, 0)


def _fallback_colour(i: int, n: int) -> tuple[int, int, int]:
    """Evenly spaced hues for a class name without a colour of its own."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((i / max(n, 1)) % 1.0, 0.8, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=16)
def parsing_palette(classes: tuple[str, ...], mirrored: bool = False) -> torch.Tensor:
    """(len(classes), 3) int16 colours for a store's `parsing_classes`, as many as it declares.

    `mirrored` gives the palette of a horizontally flipped face: each left_X takes right_X's colour
    and the other way round, which is what a parser run on the flipped frame would have drawn.
    """
    classes = tuple(classes)
    names = list(classes)
    if mirrored:
        swap = {"left_": "right_", "right_": "left_"}
        for i, name in enumerate(classes):
            for side, other in swap.items():
                if name.startswith(side) and other + name[len(side):] in classes:
                    names[i] = other + name[len(side):]
    colours = [CLASS_COLOURS.get(name, _fallback_colour(i, len(classes))) for i, name in enumerate(names)]
    return torch.tensor(colours, dtype=torch.int16)


# The mesh parser's palette (the default parser), one row per fineschema.layout.PARSING_CLASSES.
PALETTE = parsing_palette(layout.PARSING_CLASSES)


@lru_cache(maxsize=8)
def _overlay_lut(alpha: float, colours: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
    """(3 channels x classes x 256 values) table, flat: blended value of a pixel under a class colour."""
    a = int(round(alpha * 256))
    v = torch.arange(256, dtype=torch.int32)
    pal = torch.tensor(colours, dtype=torch.int32)
    rows = [[v if k == 0 else (v * (256 - a) + pal[k, c] * a) >> 8 for k in range(pal.shape[0])] for c in range(3)]
    return torch.cat([torch.cat(r) for r in rows]).to(torch.uint8)


def parsing_overlay(frames: torch.Tensor, parsing: torch.Tensor, alpha: float = 0.5,
                    palette: torch.Tensor | None = None) -> torch.Tensor:
    """frames (T,3,H,W) uint8, parsing (T,H,W) integer classes -> (T,3,H,W) uint8 blend.

    `palette` (classes, 3) is the store's (`parsing_palette(parsing_classes)`); the default is the
    mesh parser's. One table lookup per pixel and channel ((channel * classes + class) * 256 + value),
    several times faster than blending; the class part of the index is built once for all three channels.
    """
    palette = PALETTE if palette is None else palette
    lut = _overlay_lut(float(alpha), tuple(map(tuple, palette.tolist())))
    classes = palette.shape[0]
    device, frames, parsing = frames.device, frames.cpu(), parsing.cpu()
    index = frames.to(torch.int32, memory_format=torch.contiguous_format)
    row = parsing.clamp(0, classes - 1).to(torch.int32).mul_(256)
    for c in range(3):
        index[:, c] += row
        row += classes * 256
    return lut.index_select(0, index.view(-1)).view(frames.shape).to(device)


def landmark_dots(frames: torch.Tensor, points: torch.Tensor, valid: torch.Tensor | None = None,
                  radius: int = 1) -> torch.Tensor:
    """frames (T,3,H,W) uint8, points (T,P,2) as x, y in [0,1] of the image -> frames with yellow dots.

    Points outside the image, and all points of frames where `valid` (T,) is false, are not drawn.
    A dot is the (2r+1)^2 square around the point, clipped at the image border; every pixel of
    every dot is written with one flat index per channel.
    """
    t, _, h, w = frames.shape
    pts = points.cpu().numpy()
    x, y = np.floor(pts[..., 0] * w), np.floor(pts[..., 1] * h)
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if valid is not None:
        keep &= valid.cpu().numpy().astype(bool)[:, None]
    frame_of = np.nonzero(keep)[0]
    offsets = np.arange(-radius, radius + 1, dtype=np.intp)
    xs = (x[keep].astype(np.intp)[:, None, None] + offsets[None, None, :]).clip(0, w - 1)
    ys = (y[keep].astype(np.intp)[:, None, None] + offsets[None, :, None]).clip(0, h - 1)
    pixel = (frame_of[:, None, None] * (3 * h * w) + ys * w + xs).reshape(-1)
    out = frames.cpu().numpy().copy(order="C")
    flat = out.reshape(-1)
    for c, value in enumerate(YELLOW):
        flat[pixel + c * h * w] = value
    return torch.from_numpy(out).to(frames.device)
