"""`fineprep describe --scheduler ADDRESS`: the describe job on a Dask cluster, one task per chunk.

Why: one process per GPU with `--shard i/N` needs someone to start N processes; a Dask cluster
(any scheduler, workers on GPU nodes) hands chunks to whichever worker is free and re-runs the
chunks of a worker that dies.

- Each worker process builds its engine once, on the first chunk it gets, and keeps it.
- A chunk's part is named after its content (model, prompt hash, clip ids). A chunk that runs
  twice (its worker died after writing, and the scheduler re-ran it elsewhere) writes the same file
  once, and a re-run that finds the file returns its counts without loading a model, so no clip
  is described twice. The part is written aside and renamed into place, like the local runner's.
- Clips are selected as in the local runner: the `ok` manifest rows of the shard that have no
  `ok` description for this model and prompt yet. A lost chunk is simply selected again next run.
- Workers started with `--resources GPU=1` (one per GPU) make every chunk ask for one GPU.
  In-process vLLM starts child processes, which Dask's daemonic worker processes may not do: run
  such workers with `--no-nanny`, or with `DASK_DISTRIBUTED__WORKER__DAEMON=False`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fineschema import tables, write_parquet_atomic

from . import writer
from .engines.base import ClipRequest, Engine, GenerationSettings, Result, error_text, make_engine
from .prompting import build_messages, clip_media
from .refine import leak_rate, llm_refine, refine_text
from .registry import resolve
from .runner import (
    RANDOM_WEIGHTS_NOTE,
    DescribeConfig,
    DescribeError,
    Summary,
    _open_frames,
    plan_describe,
)


@dataclass(frozen=True)
class ChunkJob:
    cfg: DescribeConfig
    clips: tuple[tuple[str, int], ...]       # (clip_id, store_index)
    dataset: str | None


@dataclass
class ChunkReport:
    part: str
    described: int = 0
    failed: int = 0
    output_tokens: int = 0
    raw: list[str] = field(default_factory=list)
    refined: list[str] = field(default_factory=list)
    reused: bool = False                      # the part existed already: nothing was generated


def part_name(model: str, prompt_hash: str, clip_ids: list[str]) -> str:
    """Content-addressed part name: the same chunk always maps to the same file."""
    digest = hashlib.sha256("\n".join([model, prompt_hash, *sorted(clip_ids)]).encode()).hexdigest()[:20]
    return f"part-dask-{digest}.parquet"


# ------------------------------------------------------------------------------------- worker side
_ENGINES: dict[str, Engine] = {}


def _worker_engine(cfg: DescribeConfig, spec, settings: GenerationSettings) -> Engine:
    """One engine per worker process and configuration, closed when the process exits."""
    key = repr((cfg.engine, spec.model_id, settings))
    if key not in _ENGINES:
        engine = make_engine(cfg.engine, spec, settings).__enter__()
        atexit.register(engine.close)
        _ENGINES[key] = engine
    return _ENGINES[key]


def _limit_threads() -> None:
    """Single-threaded workers (`--nthreads 1`) should not each start one BLAS/torch thread per core."""
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ImportError:
        pass


def _report_from_part(path: Path) -> ChunkReport:
    t = pq.read_table(path, columns=["status", "output_tokens", "raw_text", "refined_text"]).to_pydict()
    ok = [s == writer.STATUS_OK for s in t["status"]]
    return ChunkReport(
        part=str(path), described=sum(ok), failed=len(ok) - sum(ok),
        output_tokens=sum(n or 0 for n in t["output_tokens"]),
        raw=[r for r, good in zip(t["raw_text"], ok, strict=True) if good and r],
        refined=[f for f, r, good in zip(t["refined_text"], t["raw_text"], ok, strict=True) if good and r and f],
        reused=True,
    )


def _write_named_part(path: Path, rows: list[dict], note: str | None) -> None:
    now = datetime.now(UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)   # the Parquet column is in ms
    for row in rows:
        row.setdefault("created_at", now)
    table = tables.conform(pa.Table.from_pylist(rows), tables.DESCRIPTION)
    if note:
        table = table.replace_schema_metadata({**table.schema.metadata, b"fineclip_note": note.encode()})
    write_parquet_atomic(table, path)                              # not a part until renamed


def describe_chunk(job: ChunkJob) -> ChunkReport:
    """Runs on a worker: describe one chunk and write its part (or find it written already)."""
    import fineprompts

    cfg = job.cfg
    store = Path(cfg.store)
    instruction, prompt_hash = fineprompts.load_instruction(cfg.prompt_id)
    prompt_id = cfg.prompt_id or fineprompts.default_instruction_id()
    spec = resolve(cfg.model, cfg.template, cfg.frames_as)
    path = writer.parts_dir(store) / part_name(spec.record_name, prompt_hash, [c for c, _ in job.clips])
    if path.exists():
        return _report_from_part(path)

    _limit_threads()
    settings = GenerationSettings(max_tokens=cfg.max_tokens, seed=cfg.seed, options=cfg.options)
    engine = _worker_engine(cfg, spec, settings)
    frames_arr = _open_frames(store)
    lexicon = fineprompts.load_lexicon(job.dataset)

    requests, failed = [], {}
    for clip_id, index in job.clips:
        try:
            media = clip_media(frames_arr[index], spec, cfg.frames)
            requests.append(ClipRequest(clip_id, media, build_messages(instruction, media)))
        except Exception as exc:  # one unreadable clip is its own error row
            failed[clip_id] = Result(clip_id, error=f"reading frames (store_index {index}): {error_text(exc)}")
    got = {r.clip_id: r for r in engine.describe(requests)} if requests else {}
    results = [failed.get(c) or got[c] for c, _ in job.clips]
    raw = [r.text if r.ok else None for r in results]
    if cfg.refine and cfg.refine_llm:
        refined = llm_refine(raw, engine, fineprompts.load_instruction("refine-v1")[0], lexicon)
    elif cfg.refine:
        refined = [refine_text(t, lexicon) for t in raw]
    else:
        refined = list(raw)

    rows = [{
        "clip_id": r.clip_id, "model": spec.record_name, "engine": engine.name, "prompt_id": prompt_id,
        "prompt_hash": prompt_hash, "raw_text": r.text, "refined_text": ref, "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens, "random_weights": spec.random_weights,
        "status": writer.STATUS_OK if r.ok else writer.STATUS_ERROR, "error": r.error,
    } for r, ref in zip(results, refined, strict=True)]
    _write_named_part(path, rows, RANDOM_WEIGHTS_NOTE if spec.random_weights else None)
    return ChunkReport(
        part=str(path), described=sum(r.ok for r in results), failed=sum(not r.ok for r in results),
        output_tokens=sum(r.output_tokens or 0 for r in results),
        raw=[t for t in raw if t], refined=[f for f, t in zip(refined, raw, strict=True) if t and f],
    )


# ------------------------------------------------------------------------------------- client side
def _gpu_resources(client) -> dict | None:
    """Ask for one GPU per chunk when the workers advertise GPUs (`dask worker --resources GPU=1`)."""
    workers = client.scheduler_info().get("workers", {}).values()
    return {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers) else None


def run_describe_dask(cfg: DescribeConfig, scheduler: str, progress: bool = True,
                      log: Callable[[str], None] = print) -> Summary:
    """Submit every chunk still to do to the cluster at `scheduler`; results stream back as they finish."""
    from distributed import Client, as_completed
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import fineprompts

    cfg = replace(cfg, store=Path(cfg.store).resolve())       # workers need the path, not our cwd
    plan = plan_describe(cfg, log)
    prompt_hash, spec, dataset, todo, summary = plan.prompt_hash, plan.spec, plan.dataset, plan.todo, plan.summary
    if not todo:
        return summary

    try:
        client = Client(scheduler, timeout="30s")
    except OSError as exc:
        raise DescribeError(f"cannot reach the Dask scheduler at {scheduler}: {error_text(exc)}") from None
    start = time.perf_counter()
    raw_all: list[str] = []
    refined_all: list[str] = []
    lost = 0
    with client:
        resources = _gpu_resources(client)
        info = client.scheduler_info()
        dashboard = f"; dashboard {client.dashboard_link}" if "dashboard" in info.get("services", {}) else ""
        log(f"dask: {len(info.get('workers', {}))} worker(s) at {scheduler}"
            + (", one GPU per chunk" if resources else "") + dashboard)
        futures = {}
        for lo in range(0, len(todo), cfg.chunk):
            chunk = tuple(todo[lo:lo + cfg.chunk])
            name = part_name(spec.record_name, prompt_hash, [c for c, _ in chunk])
            fut = client.submit(describe_chunk, ChunkJob(cfg, chunk, dataset), key=f"fineprep-describe-{name[10:30]}",
                                pure=False, retries=1, resources=resources)
            futures[fut] = chunk
        columns = [TextColumn("describe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[rate]}")]
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("describe", total=len(todo), rate="")
            for fut in as_completed(list(futures)):
                chunk = futures[fut]
                try:
                    rep: ChunkReport = fut.result()
                except Exception as exc:  # the chunk's workers kept dying: its clips are selected again next run
                    lost += len(chunk)
                    log(f"chunk of {len(chunk)} clips ({chunk[0][0]} ...) lost: {error_text(exc)}; re-run to retry")
                else:
                    summary.parts.append(Path(rep.part))
                    summary.described += rep.described
                    summary.failed += rep.failed
                    summary.output_tokens += rep.output_tokens
                    raw_all += rep.raw
                    refined_all += rep.refined
                elapsed = time.perf_counter() - start
                done_n = summary.described + summary.failed + lost
                bar.update(task, advance=len(chunk), rate=f"{done_n / elapsed:.2f} clips/s  "
                                                          f"{summary.output_tokens / elapsed:.1f} out tok/s")
    summary.failed += lost
    summary.seconds = time.perf_counter() - start
    lexicon = fineprompts.load_lexicon(dataset)
    summary.leak_before = leak_rate(raw_all, lexicon)
    summary.leak_after = leak_rate(refined_all, lexicon) if cfg.refine else summary.leak_before
    return summary
