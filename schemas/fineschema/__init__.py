"""fineschema: the contract between `fineprep` (writes a store) and `finetrain` (reads it)."""

from . import labels, layout, tables
from .validate import StoreError, check_store, validate_store
from .version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "StoreError", "check_store", "labels", "layout", "tables", "validate_store"]
