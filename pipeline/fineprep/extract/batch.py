"""One Dask task: extract a batch of clips, write their arrays, then the batch's part (its done marker)."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..entries import ClipEntry
from .clip import StageTimer, extract_clip
from .config import ExtractConfig
from .faces import get_models, quiet_native_logs
from .parsing import get_parser
from .store import ArrayWriter, manifest_row, part_name, rows_table, write_part


@dataclass
class BatchSpec:
    batch: int
    clips: list[tuple[int, ClipEntry]]  # (store_index, entry)
    root: str
    out: str
    config: ExtractConfig
    model_path: str
    label_names: tuple[str, ...]
    write_part: bool = True  # False: a clip retried alone; its rows go back to the runner, which writes the part


@dataclass
class BatchReport:
    batch: int
    statuses: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    pid: int = 0
    peak_rss_mb: float = 0.0   # the worker process's high-water mark so far
    rss_mb: float = 0.0        # its resident memory when the batch ended
    rows: list[dict] | None = None  # the manifest rows, when the batch did not write its part itself


def printable(text: str | None) -> str | None:
    """A message the manifest can store: bytes of a file name that are not UTF-8 become `\\xNN`."""
    return None if text is None else os.fsencode(text).decode("utf-8", "backslashreplace")


def _tune_process() -> None:
    """One Dask worker per core: keep OpenCV from starting its own thread pool on top, and keep
    freed memory for reuse (`_keep_heap`). Both are cheap to repeat, so every batch calls it."""
    import cv2

    cv2.setNumThreads(1)
    _keep_heap()


def _keep_heap() -> None:
    """Let glibc keep freed memory for reuse in this worker process.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, so glibc hands memory back to the
    system after every few frames and the next frame faults it in again, and the landmarker runs
    measurably slower in a Dask worker than in a plain process (BENCHMARKS.md, extract, "What changed").
    A fixed mmap threshold (32 MB) and a 256 MB trim threshold keep the heap. Linux/glibc only;
    elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark in MB.

    Linux's VmHWM belongs to the process's own address space; ru_maxrss survives exec, so a worker
    spawned by a big parent would report the parent's peak as its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_WRITERS: dict[str, ArrayWriter] = {}


def writer_for(out: str) -> ArrayWriter:
    """The worker's open handle on a store's arrays (opening costs more than writing a small clip)."""
    if out not in _WRITERS:
        _WRITERS.clear()
        _WRITERS[out] = ArrayWriter(Path(out))
    return _WRITERS[out]


class _NotTheMachine(logging.Filter):
    """Drops Dask's "Compute Failed" traceback when the machine failed (disk full, read-only): the driver
    says so in one line and the clips' rows record it; a task that fails for any other reason keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from fineschema.oserrors import machine_errno

        return machine_errno(Exception(record.getMessage())) is None


def _quiet_machine_failures() -> None:
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _NotTheMachine) for f in log.filters):
        log.addFilter(_NotTheMachine())


def warm_up(model_path: str, parser: str, out: str, parser_weights: str | None = None) -> int:
    """Build this worker's models and open the store before the first batch arrives (runs on every worker)."""
    import mediapipe as mp
    import numcodecs
    import numpy as np
    import pyarrow.parquet  # noqa: F401 - the done-marker writer; importing it takes most of a second
    import scipy.optimize  # noqa: F401 - face-track linking (a third of a second to import)

    _tune_process()
    _quiet_machine_failures()
    models = get_models(model_path)
    blank = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.zeros((224, 224, 3), np.uint8))
    with quiet_native_logs():
        models.mesh.mesh(np.zeros((256, 256, 3), np.uint8))  # first inference sets up the CPU kernels
        models.detector.detect(blank)
    get_parser(parser, parser_weights)
    from .parsing import mesh_regions

    mesh_regions()
    writer_for(out)
    numcodecs.Blosc(cname="zstd").encode(b"\0" * 4096)
    import io

    pyarrow.parquet.write_table(rows_table([]), io.BytesIO(), compression="zstd")
    return os.getpid()


def run_batch(spec: BatchSpec) -> BatchReport:
    _tune_process()
    timer = StageTimer()
    t0 = time.perf_counter()
    models = get_models(spec.model_path)
    parser = get_parser(spec.config.parser, spec.config.parser_weights)
    writer = writer_for(spec.out)
    root = Path(spec.root)
    rows, statuses = [], {}
    with models.tracker(spec.config.landmark_mode) as tracker:
        timer.add("setup", t0)
        for store_index, entry in spec.clips:
            result = extract_clip(entry, root, spec.config, models, tracker, parser, timer)
            stored = result.arrays is not None  # every clip whose frames decode (tables.STORED_STATUSES)
            if stored:
                t0 = time.perf_counter()
                writer.write(store_index, result.arrays)
                timer.add("write", t0)
            rows.append(manifest_row(
                entry, spec.label_names, store_index if stored else -1,
                result.status, printable(result.error), num_source_frames=result.num_source_frames, fps=result.fps,
                frame_indices=result.indices or None, face_found_ratio=result.face_found_ratio,
                source_width=result.source_width, source_height=result.source_height,
                frames_input=result.frames_input,
            ))
            statuses[result.status] = statuses.get(result.status, 0) + 1
    if spec.write_part:
        t0 = time.perf_counter()
        write_part(Path(spec.out), part_name(spec.batch), rows)
        timer.add("marker", t0)
    import psutil

    peak_mb = peak_rss_mb()
    now_mb = psutil.Process().memory_info().rss / 2**20
    return BatchReport(spec.batch, statuses, dict(timer.seconds), os.getpid(), peak_mb, now_mb,
                       rows=None if spec.write_part else rows)
