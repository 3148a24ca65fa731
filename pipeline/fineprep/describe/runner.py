"""The describe job: which clips, in which chunks, mapped by which executor, summed up how.

Clips are the manifest's `ok` rows. `--shard i/N` keeps the clips whose id hashes to i (stable
across runs and machines), so N processes, one per GPU, share a job without talking to each other.
Clips already described with the same model and prompt hash are skipped before any model loads. The
rest is cut into chunks (step.ChunkJob) the same way for every executor, so a chunk's part has the
same name whichever executor writes it, and a re-run does no chunk twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from fineschema import layout, read_manifest, tables

from ..errors import FineprepError
from . import writer
from .config import DescribeConfig, DescribeError, parse_shard
from .engines.base import Engine, error_text, make_engine
from .executors import LocalExecutor
from .refine import leak_rate
from .step import RANDOM_WEIGHTS_NOTE, ChunkJob, JobSetup

__all__ = ["RANDOM_WEIGHTS_NOTE", "DescribeConfig", "DescribeError", "Plan", "Summary", "parse_shard",
           "plan_describe", "run_describe", "select_clips", "shard_of"]


@dataclass
class Summary:
    selected: int = 0
    skipped: int = 0
    described: int = 0
    failed: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    leak_before: float | None = None
    leak_after: float | None = None
    parts: list[Path] = field(default_factory=list)
    raw: list[str] = field(default_factory=list, repr=False)       # ok texts, for the leak rates
    refined: list[str] = field(default_factory=list, repr=False)

    @property
    def clips_per_s(self) -> float:
        return (self.described + self.failed) / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0

    def add_part(self, path: Path) -> None:
        """Count a part the step returned (written now, or found written by an earlier try)."""
        t = pq.read_table(path, columns=["status", "output_tokens", "raw_text", "refined_text"]).to_pydict()
        ok = [s == writer.STATUS_OK for s in t["status"]]
        self.parts.append(Path(path))
        self.described += sum(ok)
        self.failed += len(ok) - sum(ok)
        self.output_tokens += sum(n or 0 for n in t["output_tokens"])
        good = [(r, f) for r, f, g in zip(t["raw_text"], t["refined_text"], ok, strict=True) if g and r]
        self.raw += [r for r, _ in good]
        self.refined += [f for _, f in good if f]

    def finish(self, seconds: float, dataset: str | None, refined: bool) -> None:
        import fineprompts

        lexicon = fineprompts.load_lexicon(dataset)
        self.seconds = seconds
        self.leak_before = leak_rate(self.raw, lexicon)
        self.leak_after = leak_rate(self.refined, lexicon) if refined else self.leak_before


def shard_of(clip_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha1(clip_id.encode("utf-8")).digest()[:8], "big") % n


def select_clips(store: Path, shard: tuple[int, int]) -> tuple[list[tuple[str, int]], str | None]:
    """(clip_id, store_index) of the stored clips in this shard (ok, few_faces, no_face: every clip the
    trainer scores), and the store's dataset name."""
    manifest = store / layout.MANIFEST_FILE
    if not manifest.exists():
        raise DescribeError(f"{manifest} not found: run `fineprep extract` first, or check --store")
    t = read_manifest(store, statuses=tables.STORED_STATUSES, columns=["clip_id", "dataset", "store_index"])
    t = t.filter(pc.greater_equal(t["store_index"], 0))
    dataset = t["dataset"][0].as_py() if t.num_rows else None
    i, n = shard
    clips = [(c, s) for c, s in zip(t["clip_id"].to_pylist(), t["store_index"].to_pylist(), strict=True)
             if shard_of(c, n) == i]
    return clips, dataset


@dataclass
class Plan:
    """What a describe job has left to do, as chunks: the same for every executor."""

    setup: JobSetup
    jobs: list[ChunkJob]
    summary: Summary


def plan_describe(cfg: DescribeConfig, log: Callable[[str], None] = print) -> Plan:
    """Resolve the prompt and model, pick this shard's clips, drop those already described, cut the rest."""
    store = Path(cfg.store)
    clips, dataset = select_clips(store, cfg.shard)
    setup = JobSetup.resolve(cfg, dataset)
    model = setup.spec.record_name
    done = writer.done_clip_ids(store, model, setup.prompt_hash)
    failures = writer.failed_before(store, model, setup.prompt_hash)
    todo = [c for c in clips if c[0] not in done]
    chunks = [tuple(todo[lo:lo + cfg.chunk]) for lo in range(0, len(todo), cfg.chunk)]
    jobs = [ChunkJob(setup, chunk, sum(failures[c] for c, _ in chunk)) for chunk in chunks]
    if not todo:
        log(f"nothing to do: {len(clips)} clips already described by {model} with prompt {setup.prompt_id}")
    elif setup.spec.random_weights:
        log(f"model {cfg.model}: random weights, the descriptions are meaningless text (plumbing only)")
    return Plan(setup, jobs, Summary(selected=len(clips), skipped=len(clips) - len(todo)))


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int, Summary, float], None]]:
    """A bar of clips done, elapsed, ETA and rates; yields `advance(clips, summary, seconds)`."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("describe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn(), TextColumn("{task.fields[rate]}")]
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        task = bar.add_task("describe", total=total, rate="")

        def advance(clips: int, s: Summary, seconds: float) -> None:
            seconds = max(seconds, 1e-9)
            bar.update(task, advance=clips, rate=f"{(s.described + s.failed) / seconds:.2f} clips/s  "
                                                 f"{s.output_tokens / seconds:.1f} out tok/s")
        yield advance


def run_describe(cfg: DescribeConfig, engine_factory: Callable[..., Engine] = make_engine,
                 progress: bool = True, log: Callable[[str], None] = print, executor=None) -> Summary:
    """Plan the job, map the step over its chunks with `executor` (in this process by default), and sum
    up the parts as they come back. A lost chunk (its worker kept dying) is counted failed and logged."""
    cfg = replace(cfg, store=Path(cfg.store).resolve())   # pool and Dask workers need the path, not our cwd
    plan = plan_describe(cfg, log)
    summary = plan.summary
    if not plan.jobs:
        return summary
    writer.remove_stale_temps(cfg.store, cfg.shard, [job.part_name for job in plan.jobs])
    executor = executor or LocalExecutor(engine_factory)
    with executor.session(plan.setup, log) as run, _progress(summary.selected - summary.skipped, progress) as advance:
        start = time.perf_counter()
        for job, outcome in run(plan.jobs):
            if isinstance(outcome, FineprepError):
                raise outcome
            if isinstance(outcome, BaseException):
                summary.failed += len(job.clips)
                log(f"chunk of {len(job.clips)} clips ({job.clips[0][0]} ...) lost: {error_text(outcome)}; "
                    "re-run to retry")
            else:
                summary.add_part(outcome)
            advance(len(job.clips), summary, time.perf_counter() - start)
    summary.finish(time.perf_counter() - start, plan.setup.dataset, cfg.refine)
    return summary
