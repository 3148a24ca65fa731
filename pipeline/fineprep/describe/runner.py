"""The describe job: which clips, in which chunks, through which engine, into which parts.

Clips are the manifest's `ok` rows. `--shard i/N` keeps the clips whose id hashes to i (stable
across runs and machines), so N processes, one per GPU, share a job without talking to each other.
Clips already described with the same model and prompt hash are skipped before any model loads.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from fineschema import layout, read_manifest, tables

from ..errors import FineprepError
from . import writer
from .engines.base import ClipRequest, Engine, GenerationSettings, Result, error_text, make_engine
from .prompting import build_messages, clip_media
from .refine import leak_rate, llm_refine, refine_text
from .registry import FramesAs, resolve

RANDOM_WEIGHTS_NOTE = "written by a model with random weights: the text is meaningless"


class DescribeError(FineprepError, RuntimeError):
    """A problem with the job as a whole (store, model, shard), as one line."""


@dataclass
class DescribeConfig:
    store: Path
    model: str = "llava"
    engine: str = "vllm"
    frames: int = 8
    chunk: int = 512
    max_tokens: int = 160
    prompt_id: str | None = None
    refine: bool = True
    refine_llm: bool = False
    shard: tuple[int, int] = (0, 1)
    template: str | None = None
    frames_as: FramesAs | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)   # engine options: endpoint, concurrency, device, ...


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

    @property
    def clips_per_s(self) -> float:
        return (self.described + self.failed) / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DescribeError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DescribeError(f"--shard {text}: need 0 <= i < N")
    return i, n


def shard_of(clip_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha1(clip_id.encode("utf-8")).digest()[:8], "big") % n


def select_clips(store: Path, shard: tuple[int, int]) -> tuple[list[tuple[str, int]], str | None]:
    """(clip_id, store_index) of the ok clips in this shard, and the store's dataset name."""
    manifest = store / layout.MANIFEST_FILE
    if not manifest.exists():
        raise DescribeError(f"{manifest} not found: run `fineprep extract` first, or check --store")
    t = read_manifest(store, statuses=[tables.STATUS_OK], columns=["clip_id", "dataset", "store_index"])
    t = t.filter(pc.greater_equal(t["store_index"], 0))
    dataset = t["dataset"][0].as_py() if t.num_rows else None
    i, n = shard
    clips = [(c, s) for c, s in zip(t["clip_id"].to_pylist(), t["store_index"].to_pylist(), strict=True)
             if shard_of(c, n) == i]
    return clips, dataset


def _open_frames(store: Path):
    import zarr

    path = store / layout.ARRAYS_DIR
    try:
        return zarr.open_group(str(path), mode="r")["frames"]
    except Exception as exc:
        raise DescribeError(f"cannot open frames in {path}: {error_text(exc)}") from exc


@dataclass
class Plan:
    """What a describe job has left to do: the same for the local runner and the Dask dispatch."""

    instruction: str
    prompt_id: str
    prompt_hash: str
    spec: object            # registry.ModelSpec
    dataset: str | None
    todo: list              # (clip_id, store_index) pairs not yet described by this model and prompt
    summary: Summary


def plan_describe(cfg: DescribeConfig, log: Callable[[str], None] = print) -> Plan:
    """Resolve the prompt and model, pick this shard's clips and drop those already described."""
    import fineprompts

    instruction, prompt_hash = fineprompts.load_instruction(cfg.prompt_id)
    prompt_id = cfg.prompt_id or fineprompts.default_instruction_id()
    spec = resolve(cfg.model, cfg.template, cfg.frames_as)
    clips, dataset = select_clips(Path(cfg.store), cfg.shard)
    done = writer.done_clip_ids(Path(cfg.store), spec.record_name, prompt_hash)
    todo = [c for c in clips if c[0] not in done]
    summary = Summary(selected=len(clips), skipped=len(clips) - len(todo))
    if not todo:
        log(f"nothing to do: {len(clips)} clips already described by {spec.record_name} with prompt {prompt_id}")
    elif spec.random_weights:
        log(f"model {cfg.model}: random weights, the descriptions are meaningless text (plumbing only)")
    return Plan(instruction, prompt_id, prompt_hash, spec, dataset, todo, summary)


def run_describe(cfg: DescribeConfig, engine_factory: Callable[..., Engine] = make_engine,
                 progress: bool = True, log: Callable[[str], None] = print) -> Summary:
    import fineprompts

    store = Path(cfg.store)
    plan = plan_describe(cfg, log)
    instruction, prompt_id, prompt_hash = plan.instruction, plan.prompt_id, plan.prompt_hash
    spec, dataset, todo, summary = plan.spec, plan.dataset, plan.todo, plan.summary
    if not todo:
        return summary
    lexicon = fineprompts.load_lexicon(dataset)
    frames_arr = _open_frames(store)
    settings = GenerationSettings(max_tokens=cfg.max_tokens, seed=cfg.seed, options=cfg.options)
    tag = f"s{cfg.shard[0]}of{cfg.shard[1]}"
    refine_instruction = fineprompts.load_instruction("refine-v1")[0] if cfg.refine_llm else None
    raw_all, refined_all = [], []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("describe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}")]
    try:
        engine = engine_factory(cfg.engine, spec, settings)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        raise DescribeError(f"cannot load model {spec.model_id or cfg.model} with the {cfg.engine} engine: "
                            f"{error_text(exc)}") from exc
    with engine, Progress(*columns, disable=not progress, transient=False) as bar:
        start = time.perf_counter()  # rates count work, not the model load
        task = bar.add_task("describe", total=len(todo), rate="")
        for lo in range(0, len(todo), cfg.chunk):
            chunk = todo[lo:lo + cfg.chunk]
            requests, failed = [], {}
            for clip_id, index in chunk:
                try:
                    media = clip_media(frames_arr[index], spec, cfg.frames)
                    requests.append(ClipRequest(clip_id, media, build_messages(instruction, media)))
                except Exception as exc:
                    failed[clip_id] = Result(clip_id, error=f"reading frames (store_index {index}): {error_text(exc)}")
            got = {r.clip_id: r for r in engine.describe(requests)} if requests else {}
            results = [failed.get(c) or got[c] for c, _ in chunk]
            raw = [r.text if r.ok else None for r in results]
            if cfg.refine and cfg.refine_llm:
                refined = llm_refine(raw, engine, refine_instruction, lexicon)
            elif cfg.refine:
                refined = [refine_text(t, lexicon) for t in raw]
            else:
                refined = list(raw)
            rows = []
            for r, ref in zip(results, refined, strict=True):
                rows.append({
                    "clip_id": r.clip_id, "model": spec.record_name, "engine": engine.name,
                    "prompt_id": prompt_id, "prompt_hash": prompt_hash, "raw_text": r.text,
                    "refined_text": ref, "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                    "random_weights": spec.random_weights,
                    "status": writer.STATUS_OK if r.ok else writer.STATUS_ERROR,
                    "error": r.error,
                })
                summary.output_tokens += r.output_tokens or 0
                summary.described += r.ok
                summary.failed += not r.ok
            note = RANDOM_WEIGHTS_NOTE if spec.random_weights else None
            summary.parts.append(writer.write_part(store, rows, tag, note=note))
            raw_all += [t for t in raw if t]
            refined_all += [t for t, r in zip(refined, raw, strict=True) if r]
            elapsed = time.perf_counter() - start
            bar.update(task, advance=len(chunk),
                       rate=f"{(lo + len(chunk)) / elapsed:.2f} clips/s  {summary.output_tokens / elapsed:.1f} out tok/s")
    summary.seconds = time.perf_counter() - start
    summary.leak_before = leak_rate(raw_all, lexicon)
    summary.leak_after = leak_rate(refined_all, lexicon) if cfg.refine else summary.leak_before
    return summary
