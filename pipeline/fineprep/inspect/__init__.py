"""Looking at a finished store: contact sheets (`show`), counts (`stats`), DFER-repo annotation files (`export`)."""

from .store import InspectError, StoreView, open_store

__all__ = ["InspectError", "StoreView", "open_store"]
