"""Bounds on the settings that size every allocation: frames per clip, crop side, crop margin.

A store's attributes, a run's run.json and a checkpoint's tensor shapes are files on disk; a run.json
that says `"size": 40000` or a temporal position table for 100,001 frames would otherwise become a
120 GB allocation or a minutes-long forward pass before anything looked at it. Every reader checks the
values against these bounds first, and `fineprep extract` accepts nothing outside them.
"""

from __future__ import annotations

import math

from .errors import SchemaError

MAX_FRAMES = 512      # the paper uses 16; 512 crops of 224 px are 77 MB per clip
MIN_SIZE, MAX_SIZE = 1, 1024   # extract itself crops at 16 px or more
MAX_MARGIN = 10.0


class LimitError(SchemaError):
    """A frame count, crop size or margin read from a file that is outside what fineclip handles."""


def _whole(value, name: str, low: int, high: int, where: str) -> int:
    if type(value) is bool or not isinstance(value, int | float) or not float(value).is_integer():
        raise LimitError(f"{where}: {name} {value!r} is not a whole number; the file is damaged")
    if not low <= int(value) <= high:
        raise LimitError(f"{where}: {name} {int(value)} is outside {low}..{high}; the file is damaged or was not "
                         "written by fineclip")
    return int(value)


def check_frames(value, where: str) -> int:
    return _whole(value, "frames", 1, MAX_FRAMES, where)


def check_size(value, where: str) -> int:
    return _whole(value, "size", MIN_SIZE, MAX_SIZE, where)


def check_margin(value, where: str) -> float:
    if type(value) is bool or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= MAX_MARGIN:
        raise LimitError(f"{where}: margin {value!r} is outside 0..{MAX_MARGIN:g}; the file is damaged")
    return float(value)
