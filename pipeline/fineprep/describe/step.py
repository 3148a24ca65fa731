"""The describe step: the clips of one chunk in, one Parquet part out. Every executor maps this, and only this.

A part's name is a hash of what determines its rows: model, prompt hash, output settings, clip ids, and
how many error rows these clips already have. So the same chunk gets the same name whichever executor
runs it; a step that finds its part written (a Dask task re-run after its worker died having written it,
a re-run of the job) returns it without loading a model; and clips that failed before get a new part,
beside their old error rows, when they are tried again.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fineschema import layout

from . import writer
from .config import DescribeConfig, DescribeError
from .engines.base import ClipRequest, Engine, GenerationSettings, Result, error_text, make_engine
from .prompting import build_messages, clip_media
from .refine import llm_refine, refine_text
from .registry import ModelSpec, resolve

RANDOM_WEIGHTS_NOTE = "written by a model with random weights: the text is meaningless"


@dataclass(frozen=True)
class JobSetup:
    """What every chunk of one describe job shares: the config, with its prompt and model resolved once."""

    cfg: DescribeConfig
    instruction: str
    prompt_id: str
    prompt_hash: str
    spec: ModelSpec
    dataset: str | None

    @classmethod
    def resolve(cls, cfg: DescribeConfig, dataset: str | None) -> JobSetup:
        import fineprompts

        try:
            instruction, prompt_hash = fineprompts.load_instruction(cfg.prompt_id)
        except KeyError as exc:
            raise DescribeError(str(exc.args[0])) from None
        prompt_id = cfg.prompt_id or fineprompts.default_instruction_id()
        return cls(cfg, instruction, prompt_id, prompt_hash, resolve(cfg.model, cfg.template, cfg.frames_as), dataset)


@dataclass(frozen=True)
class ChunkJob:
    """One chunk: the unit every executor hands out, and the unit of a part."""

    setup: JobSetup
    clips: tuple[tuple[str, int], ...]   # (clip_id, store_index)
    attempt: int = 0                     # error rows these clips already have for this model and prompt

    @property
    def part_name(self) -> str:
        s = self.setup
        key = repr((s.spec.record_name, s.prompt_hash, s.cfg.output_settings(), self.attempt,
                    sorted(c for c, _ in self.clips)))
        return f"part-{hashlib.sha256(key.encode()).hexdigest()[:20]}.parquet"

    @property
    def part_path(self) -> Path:
        return writer.parts_dir(Path(self.setup.cfg.store)) / self.part_name


class Engines:
    """A process's engines, built on first use and kept, so a model loads once per process, not per chunk."""

    def __init__(self, factory=make_engine, threads: int | None = None):
        self.factory = factory
        self.threads = threads
        self._open: dict[str, Engine] = {}

    def get(self, setup: JobSetup) -> Engine:
        cfg, spec = setup.cfg, setup.spec
        settings = GenerationSettings(max_tokens=cfg.max_tokens, seed=cfg.seed, options=cfg.options)
        key = repr((cfg.engine, spec, settings))
        if key not in self._open:
            if self.threads:
                _limit_threads(self.threads)
            try:
                self._open[key] = self.factory(cfg.engine, spec, settings).__enter__()
            except DescribeError:
                raise
            except (ImportError, OSError, RuntimeError, ValueError) as exc:
                raise DescribeError(f"cannot load model {spec.model_id or cfg.model} with the {cfg.engine} "
                                    f"engine: {error_text(exc)}") from exc
        return self._open[key]

    def close(self) -> None:
        engines, self._open = list(self._open.values()), {}
        for engine in engines:
            engine.close()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_WORKER_ENGINES: Engines | None = None


def worker_engines() -> Engines:
    """The engines of a pool or Dask worker process: kept for the process's life, closed when it exits.
    Its torch threads follow OMP_NUM_THREADS (1 when unset: one worker per core or per GPU)."""
    global _WORKER_ENGINES
    if _WORKER_ENGINES is None:
        _WORKER_ENGINES = Engines(threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
        atexit.register(_WORKER_ENGINES.close)
    return _WORKER_ENGINES


def _limit_threads(n: int) -> None:
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def describe_chunk(job: ChunkJob, engines: Engines | None = None) -> Path:
    """Describe one chunk and write its part; returns the part's path. A part already written is
    returned as it is, without loading a model."""
    path = job.part_path
    if path.exists():
        return path
    setup = job.setup
    engine = (engines or worker_engines()).get(setup)
    requests, failed = _requests(job)
    got = {r.clip_id: r for r in engine.describe(requests)} if requests else {}
    results = [failed.get(c) or got[c] for c, _ in job.clips]
    raw = [r.text if r.ok else None for r in results]
    refined = _refine(setup, raw, engine)
    rows = [_row(setup, engine.name, r, ref) for r, ref in zip(results, refined, strict=True)]
    return writer.write_part(path, rows, note=RANDOM_WEIGHTS_NOTE if setup.spec.random_weights else None)


def _requests(job: ChunkJob) -> tuple[list[ClipRequest], dict[str, Result]]:
    """The engine's requests, and an error result for each clip whose frames cannot be read."""
    setup = job.setup
    frames = open_frames(Path(setup.cfg.store))
    requests, failed = [], {}
    for clip_id, index in job.clips:
        try:
            media = clip_media(frames[index], setup.spec, setup.cfg.frames)
            requests.append(ClipRequest(clip_id, media, build_messages(setup.instruction, media)))
        except Exception as exc:
            failed[clip_id] = Result(clip_id, error=f"reading frames (store_index {index}): {error_text(exc)}")
    return requests, failed


def _refine(setup: JobSetup, raw: list[str | None], engine: Engine) -> list[str | None]:
    import fineprompts

    cfg = setup.cfg
    if not cfg.refine:
        return list(raw)
    lexicon = fineprompts.load_lexicon(setup.dataset)
    if cfg.refine_llm:
        return llm_refine(raw, engine, fineprompts.load_instruction("refine-v1")[0], lexicon)
    return [refine_text(t, lexicon) for t in raw]


def _row(setup: JobSetup, engine_name: str, r: Result, refined: str | None) -> dict:
    return {
        "clip_id": r.clip_id, "model": setup.spec.record_name, "engine": engine_name,
        "prompt_id": setup.prompt_id, "prompt_hash": setup.prompt_hash, "raw_text": r.text,
        "refined_text": refined, "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
        "random_weights": setup.spec.random_weights,
        "status": writer.STATUS_OK if r.ok else writer.STATUS_ERROR, "error": r.error,
    }


def open_frames(store: Path):
    import zarr

    path = store / layout.ARRAYS_DIR
    try:
        return zarr.open_group(str(path), mode="r")["frames"]
    except Exception as exc:
        raise DescribeError(f"cannot open frames in {path}: {error_text(exc)}") from exc
