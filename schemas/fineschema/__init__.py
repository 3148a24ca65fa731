"""fineschema: the contract between `fineprep` (writes a store) and `finetrain` (reads it)."""

from . import labels, layout, tables
from .settings import ExtractSettings, SettingsError
from .store_io import (
    DescriptionChoiceError,
    choose_descriptions,
    counts_line,
    description_counts,
    description_sets,
    read_descriptions,
    read_manifest,
    write_parquet_atomic,
)
from .validate import StoreError, check_store, validate_store
from .version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "DescriptionChoiceError", "ExtractSettings", "SettingsError", "StoreError", "check_store", "choose_descriptions", "counts_line", "description_counts",
           "description_sets", "labels", "layout", "read_descriptions", "read_manifest", "tables", "validate_store", "write_parquet_atomic"]
