"""One Dask task: extract a batch of clips, write their arrays, then the batch's part (its done marker)."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from fineschema import tables

from ..entries import ClipEntry
from .clip import Settings, StageTimer, extract_clip
from .faces import get_models
from .parsing import get_parser
from .store import ArrayWriter, manifest_row, part_name, write_part


@dataclass
class BatchSpec:
    batch: int
    clips: list[tuple[int, ClipEntry]]  # (store_index, entry)
    root: str
    out: str
    settings: Settings
    model_path: str
    label_names: tuple[str, ...]


@dataclass
class BatchReport:
    batch: int
    statuses: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    pid: int = 0
    peak_rss_mb: float = 0.0


def _limit_threads() -> None:
    """One Dask worker per core: keep OpenCV from starting its own thread pool on top."""
    import cv2

    cv2.setNumThreads(1)


def run_batch(spec: BatchSpec) -> BatchReport:
    _limit_threads()
    timer = StageTimer()
    t0 = time.perf_counter()
    models = get_models(spec.model_path)
    parser = get_parser(spec.settings.parser)
    writer = ArrayWriter(Path(spec.out))
    root = Path(spec.root)
    rows, statuses = [], {}
    with models.tracker(spec.settings.landmark_mode) as tracker:
        timer.add("setup", t0)
        for store_index, entry in spec.clips:
            result = extract_clip(entry, root, spec.settings, models, tracker, parser, timer)
            if result.status == tables.STATUS_OK:
                t0 = time.perf_counter()
                writer.write(store_index, result.arrays)
                timer.add("write", t0)
            rows.append(manifest_row(
                entry, spec.label_names, store_index if result.status == tables.STATUS_OK else -1,
                result.status, result.error, num_source_frames=result.num_source_frames, fps=result.fps,
                frame_indices=result.indices or None, face_found_ratio=result.face_found_ratio,
            ))
            statuses[result.status] = statuses.get(result.status, 0) + 1
    t0 = time.perf_counter()
    write_part(Path(spec.out), part_name(spec.batch), rows)
    timer.add("write", t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BatchReport(spec.batch, statuses, dict(timer.seconds), os.getpid(), rss_mb)
