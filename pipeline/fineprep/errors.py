"""fineprep's base error: a command catches it (with `fineschema.errors.SchemaError`) and prints one line.

The subclasses live beside the code that raises them; a caller that needs to tell them apart catches
the subclass (`ExtractError`, `DescribeError`, `DatasetLayoutError`, `StoreLocked`, ...).
"""

from __future__ import annotations


class FineprepError(Exception):
    """Bad input or a setting that cannot work; the message names the clip, file or option and what to do."""
