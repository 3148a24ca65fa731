"""Description engines behind one interface (`base.Engine`); `make_engine` imports the chosen one lazily."""

from __future__ import annotations

from .base import ENGINES, ClipRequest, Engine, GenerationSettings, Result, make_engine

__all__ = ["ENGINES", "ClipRequest", "Engine", "GenerationSettings", "Result", "make_engine"]
