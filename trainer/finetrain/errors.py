"""finetrain's base error: a command catches it (with `fineschema.errors.SchemaError`) and prints one line.

The subclasses live beside the code that raises them: `ConfigError` (config), `CheckpointError`
(checkpoint), `SplitError` (split), `BackboneError` (backbone), `ZeroShotError` (zeroshot),
`FoldError` (foldrun), `FoldTableError`/`NoRunError` (folds), `PredictError` (predict),
`PredictionsError` (predictions), `ClassMappingError`/`EvalError` (crossdata), `ReportError` (report).
Problems with the store itself are `fineschema.StoreError` and its siblings.
"""

from __future__ import annotations


class FinetrainError(Exception):
    """A run that cannot start or go on; the message names the file or option and what to do."""
