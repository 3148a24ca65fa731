"""The synth package's error, apart so the layout writers raise it without importing the package."""

from __future__ import annotations

from ..errors import FineprepError


class SynthError(FineprepError, RuntimeError):
    """A dataset cannot be written where or how it was asked for."""
