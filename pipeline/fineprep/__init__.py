"""fineprep: offline preprocessing of DFER datasets into a Zarr + Parquet store."""

__version__ = "0.1.0"
