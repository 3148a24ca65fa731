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
from fineschema.oserrors import machine_errno

from ..entries import ClipEntry
from . import store
from .batch import BatchReport, BatchSpec, run_batch, warm_up
from .config import DEFAULT_MEMORY_LIMIT, ExtractConfig


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
    machine_failures: Counter = field(default_factory=Counter)  # errno -> clips lost to it (disk full, ...)

    @property
    def ok(self) -> int:
        return self.statuses.get(tables.STATUS_OK, 0)


# Dask retries a task whose worker died 3 times by default, killing a worker each time; a batch whose
# worker died is retried clip by clip here anyway, so one retry is enough to tell a culprit from bad luck.
ALLOWED_FAILURES = 1

# What one extract worker process holds (mediapipe models, OpenCV, the store handle, one clip in flight):
# a base plus the clip's arrays. Measured from BatchReport.peak_rss_mb on synthetic 256 px clips, 16 frames:
# 372 MB at --size 112, 375 at 224, 398-413 at 448 (2-core CPU, 24 GiB, 2026-12-02); sources larger than
# the crop add their decoded frames on top.
WORKER_BASE_MB = 400
CLIP_BYTES_PER_PIXEL = 12  # per stored frame pixel: crop, parsing map and their working copies


def worker_need_mb(frames: int, size: int) -> float:
    """Memory one worker needs at these settings, in MiB (see WORKER_BASE_MB)."""
    return WORKER_BASE_MB + frames * size * size * CLIP_BYTES_PER_PIXEL / 2**20


def resource_warnings(workers: int | None, memory_limit: str | int | None, *, frames: int, size: int,
                      cores: int | None = None) -> list[str]:
    """One line per setting that will hurt: more workers than cores (each worker is one process on one
    core, so extra ones add memory, not speed), or a per-worker memory limit below what a worker needs
    at this size (Dask's nanny kills a worker at 95 % of its limit)."""
    from dask.utils import format_bytes, parse_bytes

    cores = cores or max(1, len(os.sched_getaffinity(0)))
    lines = []
    if workers and workers > cores:
        lines.append(f"--workers {workers} is above the {cores} core(s) this process may use: the extra "
                     f"{workers - cores} worker(s) share cores, adding memory but no speed")
    if memory_limit:
        limit = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)
        need = worker_need_mb(frames, size) * 2**20
        if limit < need:
            lines.append(f"--memory-limit {format_bytes(limit)} per worker is below the ~{format_bytes(need)} a "
                         f"worker needs at {frames} frames of {size}x{size}: workers will be killed and their "
                         "clips marked error")
    return lines


def start_client(workers: int | None, scheduler: str | None, console: Console,
                 memory_limit: str | int = DEFAULT_MEMORY_LIMIT):
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
                               memory_limit=memory_limit, silence_logs=40,
                               scheduler_kwargs={"allowed_failures": ALLOWED_FAILURES})
        client = Client(cluster)
    nworkers = len(client.scheduler_info().get("workers", {}))
    console.print(f"dask: {nworkers} worker(s) at {client.scheduler.address}; dashboard {client.dashboard_link}")
    return client, cluster


WORKER_DIED = ("worker died (out of memory?) while extracting this clip on its own, after its batch's worker "
               "died; raise --memory-limit or lower --max-pixels, then re-extract with --overwrite")


def worker_died(exc: BaseException) -> bool:
    """Whether a task failed because its worker process died (killed for memory, crashed), not by raising."""
    from distributed import KilledWorker

    return isinstance(exc, KilledWorker)


@dataclass
class _Retry:
    """A batch whose worker died, being re-run one clip at a time (one after another, so a clip that
    kills its worker again is the culprit, and no batchmate is queued beside it)."""

    batch: int
    left: list[tuple[int, ClipEntry]]
    rows: list[dict] = field(default_factory=list)


def run(plan: Plan, *, root: Path, out: Path, config: ExtractConfig, model_path: str,
        label_names: tuple[str, ...], client, console: Console) -> Outcome:
    """Write the index part, submit every batch without a part, and compact the manifest at the end."""
    import time

    start = time.perf_counter()
    if plan.final:
        store.write_part(out, store.INDEX_PART, [
            store.manifest_row(e, label_names, -1, e.status, e.error) for e in plan.final])
    done = store.done_batches(out)
    todo = [(b, clips) for b, clips in enumerate(plan.batches) if b not in done]
    if len(done):
        console.print(f"resume: {len(done)} of {len(plan.batches)} batches already done, skipping them")
    if todo and client is None:
        raise ValueError("batches are left to extract but no Dask client was given")
    job = _Job(plan, root, out, config, model_path, label_names, client)
    if todo:
        # Models are built once per worker process; do it on every worker now, before the clock starts.
        client.run(warm_up, model_path, config.parser, str(out), config.parser_weights)
        start = time.perf_counter()
        job.run(todo, console, start)
    manifest = store.compact(out, job.crashed)
    statuses = Counter(manifest.column("status").to_pylist())
    machine = Counter(n for n in (machine_errno(Exception(r["error"] or "")) for r in job.crashed) if n)
    return Outcome(manifest.num_rows, statuses, job.reports, len(done), time.perf_counter() - start, machine)


class _Job:
    """The batches of one run in flight on Dask: results as they come, worker deaths retried clip by clip."""

    def __init__(self, plan: Plan, root: Path, out: Path, config: ExtractConfig, model_path: str,
                 label_names: tuple[str, ...], client):
        self.root, self.out, self.config, self.model_path = root, out, config, model_path
        self.label_names, self.client = label_names, client
        # Task keys unique per store and plan, so two extracts on one long-lived cluster never share a key.
        self.token = store.plan_digest([str(out), plan.digest])[:10]
        self.futures: dict = {}
        self.pending = None
        self.reports: list[BatchReport] = []
        self.crashed: list[dict] = []  # rows of batches that failed by raising (no part: the next run retries)
        self.failures = 0

    def _spec(self, b: int, clips, write_part: bool = True) -> BatchSpec:
        return BatchSpec(b, clips, str(self.root), str(self.out), self.config, self.model_path, self.label_names,
                         write_part)

    def run(self, todo: list, console: Console, start: float) -> None:
        import time

        from distributed import as_completed

        for b, clips in todo:
            fut = self.client.submit(run_batch, self._spec(b, clips), key=f"fineprep-extract-{self.token}-{b:06d}",
                                     pure=False)
            self.futures[fut] = (None, b, clips)
        self.pending = as_completed(list(self.futures))
        progress = Progress(
            TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(), TextColumn("clips"),
            TextColumn("[red]{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
        )
        with progress:
            task = progress.add_task("extract", total=sum(len(c) for _, c in todo), failed=0, rate="")
            for fut in self.pending:
                retry, b, clips = self.futures.pop(fut)
                if not self._settle(fut, retry, b, clips, console):
                    continue  # split into single-clip retries; they advance the bar as they finish
                elapsed = time.perf_counter() - start
                progress.advance(task, len(clips))
                done_n = progress.tasks[0].completed
                progress.update(task, failed=self.failures, rate=f"{done_n / max(elapsed, 1e-9):.2f} clips/s")

    def _settle(self, fut, retry: _Retry | None, b: int, clips: list, console: Console) -> bool:
        """Take one finished task: its report, or the rows that record why it failed. False when the
        task's clips went back to Dask one by one instead (a batch whose worker died)."""
        try:
            rep: BatchReport = fut.result()
        except Exception as exc:  # noqa: BLE001 - a lost batch is recorded, and retried by the next run
            died = worker_died(exc)
            if died and retry is None and len(clips) > 1:
                console.print(f"[yellow]batch {b}: its worker died; retrying its {len(clips)} clips one by one")
                self._next_single(_Retry(b, list(clips)))
                return False
            if died:  # a clip alone killed its worker: recorded (in the part), not retried again
                reason = WORKER_DIED
            else:
                reason = f"batch {b} failed in its worker ({type(exc).__name__}: {exc}); re-run to retry"
            rows = [store.manifest_row(e, self.label_names, -1, tables.STATUS_ERROR, reason.splitlines()[0])
                    for _, e in clips]
            if retry is not None:
                retry.rows.extend(rows)
                self._next_single(retry)
            elif died:
                store.write_part(self.out, store.part_name(b), rows)
            else:
                self.crashed += rows
            self.failures += len(clips)
            return True
        self.reports.append(rep)
        self.failures += sum(v for k, v in rep.statuses.items() if k not in tables.STORED_STATUSES)
        if retry is not None:
            retry.rows.extend(rep.rows or [])
            self._next_single(retry)
        return True

    def _next_single(self, retry: _Retry) -> None:
        """Submit the retry's next clip alone, or write the batch's part when every clip has its row."""
        if not retry.left:
            store.write_part(self.out, store.part_name(retry.batch), retry.rows)
            return
        clip = retry.left.pop(0)
        fut = self.client.submit(run_batch, self._spec(retry.batch, [clip], write_part=False), pure=False,
                                 key=f"fineprep-extract-{self.token}-{retry.batch:06d}-clip-{clip[0]:09d}")
        self.futures[fut] = (retry, retry.batch, [clip])
        self.pending.add(fut)
