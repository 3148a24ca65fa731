"""Whole-chunk reads of one Zarr array, decoded in the calling thread.

A store keeps one chunk per clip, and the Dataset wants whole clips. zarr 3.1 serves every
`array[i]` through its event-loop thread and two thread-pool hand-offs (file read, decompression)
plus a copy into a fresh output, which costs more CPU than the decoding (BENCHMARKS.md, "Loader,
2026-12-01"). `ChunkReader` reads the chunk's bytes with the store's own synchronous
`get_sync` and runs the array's own codec chain through each codec's `_decode_sync` (what zarr's
async codecs run in their threads), so values, fill values and dtypes are zarr's. Arrays it cannot
serve this way (chunks that are not one leading index each, sharding, codecs or stores without a
synchronous path) are read through zarr as usual. zarr 3.1 has no public synchronous read; newer
zarr's opt-in synchronous codec pipeline would make this module unnecessary.
"""

from __future__ import annotations

import numpy as np


class ChunkReader:
    """`read(i)` returns `array[i]` for an array chunked as (1, *shape[1:])."""

    def __init__(self, array):
        self.array = array
        self._plan = _decode_plan(array)

    @property
    def fast(self) -> bool:
        return self._plan is not None

    def read(self, index: int) -> np.ndarray:
        """`array[index]` as a numpy array (read-only when it comes straight from the decoder)."""
        if self._plan is None:
            return np.asarray(self.array[index])
        store, prefix, metadata, zeros, steps = self._plan
        data = store.get_sync(prefix + metadata.encode_chunk_key((index,) + zeros))
        if data is None:
            return np.full(self.array.shape[1:], self.array.fill_value, dtype=self.array.dtype)
        for codec, spec in steps:
            data = codec._decode_sync(data, spec)
        return data.as_numpy_array().reshape(self.array.shape[1:])


def _decode_plan(array):
    """(store, the array's key prefix in it, metadata, chunk coords after the first,
    [(codec, spec)] in decode order), or None."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.codec_pipeline import BatchedCodecPipeline

    try:
        inner = array._async_array
        pipeline, metadata, store = inner.codec_pipeline, inner.metadata, inner.store_path.store
        chunks, shards = tuple(array.chunks), array.shards
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if (shards is not None or not isinstance(pipeline, BatchedCodecPipeline) or not hasattr(store, "get_sync")
            or not array.shape or chunks != (1, *array.shape[1:])):
        return None
    prefix = f"{inner.store_path.path}/" if inner.store_path.path else ""
    zeros = (0,) * (len(chunks) - 1)
    spec = metadata.get_chunk_spec((0,) + zeros, array.config, prototype=default_buffer_prototype())
    steps = []  # each codec with the spec of its decoded side, in encoding order
    for codec in (*pipeline.array_array_codecs, pipeline.array_bytes_codec, *pipeline.bytes_bytes_codecs):
        if not hasattr(codec, "_decode_sync"):
            return None
        steps.append((codec, spec))
        spec = codec.resolve_metadata(spec)
    return store, prefix, metadata, zeros, steps[::-1]
