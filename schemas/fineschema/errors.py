"""The one base class of the contract's errors, so each program's commands catch store problems in one place."""

from __future__ import annotations


class SchemaError(ValueError):
    """A store, path, label set or description choice that breaks the contract; the message names what to do."""
