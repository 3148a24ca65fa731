"""Middle-level cues drawn as images, on the fly, so CLIP's image encoder can read them.

The store keeps raw parsing class maps and landmark coordinates; the trainer draws them: parsing
as a colour overlay on the frame (background left as is), landmarks as yellow dots on the frame.
Both work on batches of frames as float tensors in [0, 1], shaped (T, 3, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# One colour per class of fineschema.layout.PARSING_CLASSES; background is never painted.
PALETTE = torch.tensor(
    [
        [0, 0, 0],        # background
        [255, 204, 153],  # skin
        [153, 51, 0],     # brows
        [0, 153, 255],    # eyes
        [255, 153, 204],  # nose
        [204, 0, 51],     # lips
        [102, 0, 153],    # inner_mouth
    ],
    dtype=torch.float32,
) / 255.0
YELLOW = torch.tensor([1.0, 1.0, 0.0])


def parsing_overlay(frames: torch.Tensor, parsing: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """frames (T,3,H,W) in [0,1], parsing (T,H,W) integer classes -> (T,3,H,W) blended image."""
    classes = parsing.long().clamp_(0, PALETTE.shape[0] - 1)
    colours = PALETTE.to(frames.device)[classes].permute(0, 3, 1, 2)  # (T,3,H,W)
    painted = (classes > 0).unsqueeze(1).to(frames.dtype) * alpha
    return frames * (1 - painted) + colours * painted


def landmark_dots(frames: torch.Tensor, points: torch.Tensor, valid: torch.Tensor | None = None,
                  radius: int = 1) -> torch.Tensor:
    """frames (T,3,H,W), points (T,P,2) as x, y in [0,1] of the image -> frames with yellow dots.

    Points outside the image, and all points of frames where `valid` (T,) is false, are not drawn.
    """
    t, _, h, w = frames.shape
    x = (points[..., 0] * w).floor().long()
    y = (points[..., 1] * h).floor().long()
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    if valid is not None:
        inside &= valid.bool().unsqueeze(1)
    flat = torch.zeros(t, h * w, dtype=frames.dtype, device=frames.device)
    idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))
    flat.scatter_(1, idx, inside.to(frames.dtype))
    mask = flat.view(t, 1, h, w)
    if radius > 0:
        mask = F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return frames * (1 - mask) + YELLOW.to(frames.device).view(1, 3, 1, 1) * mask
