"""The float step of the image streams, shared by the loader and the model.

The Dataset (`store.py`) hands over uint8 images and per-clip jitter factors; `finalize` turns them into
normalised float tensors on whatever device the batch is on, so this step runs on the GPU when there
is one. It lives apart from the loader so the model can finalise a batch without importing the store
reader (pyarrow, zarr).
"""

from __future__ import annotations

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VISUAL_STREAMS = ("frames", "parsing", "landmarks")


def needs_finalize(batch: dict) -> bool:
    """True when any image stream of `batch` is still uint8 (as the Dataset delivers it)."""
    return any(torch.is_tensor(batch.get(s)) and batch[s].dtype == torch.uint8 for s in VISUAL_STREAMS)


def finalize(batch: dict) -> dict:
    """uint8 image streams -> float, colour jitter, CLIP normalisation; on whatever device the batch is.

    uint8 images are a quarter of the bytes between processes and keep the drawing integer; the jitter
    factors (brightness, contrast, saturation per clip) travel beside them. Applied to all image
    streams alike. Idempotent: float streams pass through.
    """
    out = dict(batch)
    for key in VISUAL_STREAMS:
        x = batch.get(key)
        if x is None or x.dtype != torch.uint8:
            continue
        x = x.float().div_(255)
        single = x.dim() == 4
        if single:
            x = x.unsqueeze(0)
        factors = batch.get("jitter")
        if factors is not None:
            x = _jitter(x, factors.to(x.device).view(-1, 3))
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 1, 3, 1, 1)
        x = (x - mean) / std
        out[key] = x[0] if single else x
    return out


def _jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation of (B,T,3,H,W) images in [0, 1], one factor triple per clip."""
    b, c, s = (factors[:, i].view(-1, 1, 1, 1, 1) for i in range(3))
    x = x * b
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    x = (x - mean) * c + mean
    grey = 0.299 * x[:, :, 0:1] + 0.587 * x[:, :, 1:2] + 0.114 * x[:, :, 2:3]
    return ((x - grey) * s + grey).clamp_(0, 1)
