"""Executors: ways to map the describe step (step.describe_chunk) over a job's chunks. Nothing more.

Each has `session(setup, log)`, a context that yields `run(jobs)`, an iterator of `(job, outcome)` as
chunks finish; the outcome is the part's path, or the exception that lost the chunk (its clips are
selected again on the next run). The driver (runner.run_describe) does the rest.

- `LocalExecutor`: in this process, one engine, chunk after chunk.
- `PoolExecutor` (`--procs N [--gpus ...]`): N spawned processes, each with one engine (and one GPU
  through CUDA_VISIBLE_DEVICES), taking chunks as they get free. They receive the job objects
  (config included), never a command line, and exit within a second when the driver dies
  (`fineprep.lifeline`).
- `DaskExecutor` (`--scheduler ADDRESS`): one task per chunk on any Dask cluster; a chunk whose worker
  dies is re-run elsewhere (and finds its part if it was written). Workers started with
  `--resources GPU=1` make every chunk ask for one GPU. In-process vLLM starts child processes, which
  Dask's daemonic worker processes may not do: run such workers with `--no-nanny`, or with
  `DASK_DISTRIBUTED__WORKER__DAEMON=False`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .config import DescribeError
from .engines.base import error_text, make_engine
from .step import ChunkJob, Engines, JobSetup, describe_chunk

Outcome = tuple[ChunkJob, Path | BaseException]


def _as_done(submit: Callable, jobs: Iterable[ChunkJob], as_completed: Callable) -> Iterator[Outcome]:
    futures = {submit(job): job for job in jobs}
    for fut in as_completed(list(futures)):
        try:
            yield futures[fut], fut.result()
        except Exception as exc:
            yield futures[fut], exc


class LocalExecutor:
    def __init__(self, engine_factory=make_engine):
        self.engine_factory = engine_factory

    @contextlib.contextmanager
    def session(self, setup: JobSetup, log: Callable[[str], None]) -> Iterator[Callable]:
        with Engines(self.engine_factory) as engines:
            engines.get(setup)  # the model loads before the clock starts: rates count work
            yield lambda jobs: ((job, describe_chunk(job, engines)) for job in jobs)


def _start_pool_worker(slots, threads: int, parent: int) -> None:
    """Runs first in each pool process, before torch or vLLM is imported: it dies with the driver
    (`parent`), and takes its GPU and thread count."""
    from ..lifeline import die_with_parent

    die_with_parent(parent)
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


class PoolExecutor:
    def __init__(self, procs: int, gpus: list[str] | None = None):
        self.procs = procs
        self.gpus = gpus

    @contextlib.contextmanager
    def session(self, setup: JobSetup, log: Callable[[str], None]) -> Iterator[Callable]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")       # a fresh interpreter: no forked CUDA or thread state
        slots = ctx.Queue()
        for i in range(self.procs):
            slots.put(self.gpus[i % len(self.gpus)] if self.gpus else None)
        threads = max(1, (os.cpu_count() or 1) // self.procs)
        pool = ProcessPoolExecutor(self.procs, mp_context=ctx, initializer=_start_pool_worker,
                                   initargs=(slots, threads, os.getpid()))
        log(f"{self.procs} describe processes" + (f" on GPUs {','.join(self.gpus)}" if self.gpus else ""))
        try:
            yield lambda jobs: _as_done(lambda job: pool.submit(describe_chunk, job), jobs, as_completed)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    def __init__(self, scheduler: str):
        self.scheduler = scheduler

    @contextlib.contextmanager
    def session(self, setup: JobSetup, log: Callable[[str], None]) -> Iterator[Callable]:
        from distributed import Client, as_completed

        try:
            client = Client(self.scheduler, timeout="30s")
        except OSError as exc:
            raise DescribeError(f"cannot reach the Dask scheduler at {self.scheduler}: {error_text(exc)}") from None
        with client:
            info = client.scheduler_info()
            workers = info.get("workers", {}).values()
            resources = {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None
            dashboard = f"; dashboard {client.dashboard_link}" if "dashboard" in info.get("services", {}) else ""
            log(f"dask: {len(workers)} worker(s) at {self.scheduler}"
                + (", one GPU per chunk" if resources else "") + dashboard)

            def submit(job: ChunkJob):
                return client.submit(describe_chunk, job, key=f"fineprep-describe-{job.part_name[5:25]}",
                                     pure=False, retries=1, resources=resources)

            yield lambda jobs: _as_done(submit, jobs, as_completed)
