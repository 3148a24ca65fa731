"""The extraction engine behind `fineprep extract`.

One module per job: `sampling` (which frames), `media` (decode only those), `faces` (detect, crop,
landmarks, blendshapes), `parsing` (class maps from the mesh, pluggable), `clip` (one clip end to end),
`store` (Zarr arrays, manifest parts, compaction), `runner` (batches on a Dask cluster with progress).
"""
