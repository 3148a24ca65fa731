"""Run an extraction on Dask: plan batches once, skip done ones, stream results with a progress bar.

The plan is the index sorted by clip id: usable clips get store_index 0..N-1 in that order and batch
store_index // batch_size, so the same dataset and options always give the same plan and a re-run
finds its finished batches by their parts.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fineschema import tables

from ..entries import ClipEntry
from . import store
from .batch import BatchReport, BatchSpec, run_batch, warm_up
from .clip import Settings


@dataclass
class Plan:
    entries: list[ClipEntry]                 # every clip, sorted by id
    final: list[ClipEntry]                   # settled by the index (missing, bad annotation, ...)
    batches: list[list[tuple[int, ClipEntry]]]
    num_clips: int                           # usable clips = rows of the arrays

    @property
    def digest(self) -> str:
        return store.plan_digest([e.clip_id for e in self.entries])


def make_plan(entries: list[ClipEntry], batch_size: int, limit: int | None = None) -> Plan:
    ordered = sorted(entries, key=lambda e: e.clip_id)
    if limit is not None:
        ordered = ordered[:limit]
    usable = [e for e in ordered if e.usable]
    final = [e for e in ordered if not e.usable]
    indexed = list(enumerate(usable))
    batches = [indexed[i:i + batch_size] for i in range(0, len(indexed), batch_size)]
    return Plan(ordered, final, batches, len(usable))


@dataclass
class Outcome:
    manifest_rows: int
    statuses: Counter
    reports: list[BatchReport] = field(default_factory=list)
    skipped_batches: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(tables.STATUS_OK, 0)


def start_client(workers: int | None, scheduler: str | None, console: Console):
    """A client on an existing scheduler, or on a LocalCluster with one single-threaded process per core."""
    from distributed import Client, LocalCluster

    # FFmpeg's own messages about a broken file ("moov atom not found") would repeat what the clip's
    # manifest row already says; local worker processes inherit this setting.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

    if scheduler:
        client = Client(scheduler, timeout="30s")
        cluster = None
    else:
        n = workers or max(1, len(os.sched_getaffinity(0)))
        # ":0": any free port, so two extracts on one machine never fight over 8787.
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               memory_limit="3GiB", silence_logs=40)
        client = Client(cluster)
    nworkers = len(client.scheduler_info().get("workers", {}))
    console.print(f"dask: {nworkers} worker(s) at {client.scheduler.address}; dashboard {client.dashboard_link}")
    return client, cluster


def run(plan: Plan, *, root: Path, out: Path, settings: Settings, model_path: str, label_names: tuple[str, ...],
        client, console: Console) -> Outcome:
    """Write the index part, submit every batch without a part, and compact the manifest at the end."""
    import time

    from distributed import as_completed

    start = time.perf_counter()
    if plan.final:
        store.write_part(out, store.INDEX_PART, [
            store.manifest_row(e, label_names, -1, e.status, e.error) for e in plan.final])
    done = store.done_batches(out)
    todo = [(b, clips) for b, clips in enumerate(plan.batches) if b not in done]
    total = sum(len(c) for _, c in todo)
    if todo:
        # Models are built once per worker process; do it on every worker now, before the clock starts.
        client.run(warm_up, model_path, settings.parser, str(out))
        start = time.perf_counter()
    futures = {}
    # Task keys unique per store and plan, so two extracts on one long-lived cluster never share a key.
    token = store.plan_digest([str(out), plan.digest])[:10]
    for b, clips in todo:
        spec = BatchSpec(b, clips, str(root), str(out), settings, model_path, label_names)
        fut = client.submit(run_batch, spec, key=f"fineprep-extract-{token}-{b:06d}", pure=False, retries=1)
        futures[fut] = (b, clips)
    reports: list[BatchReport] = []
    crashed: list[dict] = []
    failures = 0
    progress = Progress(
        TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(), TextColumn("clips"),
        TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )
    if len(done):
        console.print(f"resume: {len(done)} of {len(plan.batches)} batches already done, skipping them")
    if todo and client is None:
        raise ValueError("batches are left to extract but no Dask client was given")
    with progress:
        task = progress.add_task("extract", total=total, failed=0, rate="")
        for fut in as_completed(list(futures)) if futures else ():
            b, clips = futures[fut]
            try:
                rep: BatchReport = fut.result()
                reports.append(rep)
                failures += sum(v for k, v in rep.statuses.items() if k != tables.STATUS_OK)
            except Exception as exc:  # noqa: BLE001 - a lost batch is recorded, and retried by the next run
                reason = f"batch {b} failed in its worker ({type(exc).__name__}: {exc}); re-run to retry"
                crashed += [store.manifest_row(e, label_names, -1, tables.STATUS_ERROR, reason.splitlines()[0])
                            for _, e in clips]
                failures += len(clips)
            elapsed = time.perf_counter() - start
            progress.advance(task, len(clips))
            done_n = progress.tasks[0].completed
            progress.update(task, failed=failures, rate=f"{done_n / max(elapsed, 1e-9):.2f} clips/s")
    manifest = store.compact(out, crashed)
    statuses = Counter(manifest.column("status").to_pylist())
    return Outcome(manifest.num_rows, statuses, reports, len(done), time.perf_counter() - start)
