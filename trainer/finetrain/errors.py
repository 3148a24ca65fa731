"""finetrain's base error: a command catches it (with `fineschema.errors.SchemaError`) and prints one line.

The subclasses live beside the code that raises them (`ConfigError`, `CheckpointError`, `SplitError`,
`BackboneError`, `ZeroShotError`, `PredictError`, `ClassMappingError`).
"""

from __future__ import annotations


class FinetrainError(Exception):
    """A run that cannot start or go on; the message names the file or option and what to do."""
