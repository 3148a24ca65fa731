"""Which source frames a clip keeps: T frames at segment centres, the way the public DFER test loaders pick them.

The clip is cut into T equal segments and the middle frame of each is taken. A clip shorter than T
repeats its last frame so every stored clip has exactly T frames (the public code edge-pads the same way).
"""

from __future__ import annotations


def segment_centres(num_frames: int, frames: int) -> list[int]:
    """Source indices of the `frames` stored frames of a clip with `num_frames` frames (0-based, non-decreasing)."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    if num_frames < frames:
        return [min(i, num_frames - 1) for i in range(frames)]
    seg = num_frames / frames
    return [min(int(seg * i + seg / 2), num_frames - 1) for i in range(frames)]
