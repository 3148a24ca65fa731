"""`fineprep describe`: one MLLM description of facial changes per clip (implementation: fineprep.describe)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class EngineName(StrEnum):
    vllm = "vllm"
    openai = "openai"
    hf = "hf"


class FramesAsName(StrEnum):
    video = "video"
    images = "images"
    grid = "grid"


def describe(
    store: Path = typer.Option(..., "--store", help="Store written by `fineprep extract`."),
    model: str = typer.Option("llava", help="Alias (llava, qwen2.5-vl, llava-1.5, tiny-random), HF id or local dir."),
    engine: EngineName = typer.Option(EngineName.vllm, help="vllm (in-process), openai (an endpoint) or hf."),
    endpoint: str = typer.Option(None, help="OpenAI-compatible base URL for --engine openai, e.g. http://127.0.0.1:8000/v1."),
    served_model: str = typer.Option(None, help="Model name on the endpoint (default: ours, or the only one served)."),
    concurrency: int = typer.Option(16, min=1, help="Requests in flight (--engine openai)."),
    frames: int = typer.Option(8, min=1, help="Frames per clip, evenly spaced over the stored ones."),
    chunk: int = typer.Option(512, min=1, help="Clips per engine call and per Parquet part."),
    max_tokens: int = typer.Option(160, min=1, help="Most output tokens per description."),
    prompt: str = typer.Option(None, "--prompt", help="Instruction id in prompts/instructions.yaml (default: its `default`)."),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="Strip words that name or imply a class (lexicon rules)."),
    refine_llm: bool = typer.Option(False, "--refine-llm", help="Also rewrite with a text-only pass of the same model first."),
    shard: str = typer.Option("0/1", help="i/N: this process takes the clips whose id hashes to i."),
    procs: int = typer.Option(1, min=1, help="Describe in this many processes (one engine each); chunks go to whichever is free."),
    gpus: str = typer.Option(None, help="With --procs: comma-separated GPU ids, one per process (CUDA_VISIBLE_DEVICES)."),
    scheduler: str = typer.Option(None, help="Dask scheduler address: one task per chunk on its (GPU) workers."),
    template: str = typer.Option(None, help="Prompt template for models without a chat template: {media} and {prompt}."),
    frames_as: FramesAsName = typer.Option(None, help="How frames go in: video, images or grid (default: the model's)."),
    gpu_memory_utilization: float = typer.Option(0.90, help="--engine vllm: share of GPU memory for vLLM."),
    seed: int = typer.Option(0, help="Sampling seed (decoding is greedy)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Describe how each clip's face moves, with a multimodal LLM; resumable, one Parquet part per chunk."""
    from fineprep.describe.runner import DescribeConfig, parse_shard, run_describe
    from fineprep.describe.writer import writing
    from fineprep.errors import FineprepError
    from fineschema.errors import SchemaError
    from fineschema.oserrors import machine_error_line

    try:
        cfg = DescribeConfig(
            store=store, model=model, engine=engine.value, frames=frames, chunk=chunk, max_tokens=max_tokens,
            prompt_id=prompt, refine=refine, refine_llm=refine_llm, shard=parse_shard(shard),
            template=template, frames_as=frames_as.value if frames_as else None, seed=seed,
            options={"endpoint": endpoint, "served_model": served_model, "concurrency": concurrency,
                     "gpu_memory_utilization": gpu_memory_utilization},
        )
        executor = _executor(procs, gpus, scheduler)
        with writing(cfg.store, cfg.shard):
            summary = run_describe(cfg, progress=progress, log=typer.echo, executor=executor)
    except KeyboardInterrupt:
        from fineprep.interrupt import EXIT_INTERRUPTED
        from fineschema.store_io import description_parts

        parts = len(description_parts(store))
        typer.echo(f"describe interrupted ({parts} description parts written so far); run the same command "
                   "again to resume (finished chunks are kept)", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (FineprepError, SchemaError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # the machine's (disk full, read-only, permissions): one line; anything else raises
        if (line := machine_error_line(exc, f"describe of {store}")) is None:
            raise
        typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None
    _report(summary)


def _executor(procs: int, gpus: str | None, scheduler: str | None):
    """Where the chunks run: this process, `procs` processes, or a Dask cluster."""
    from fineprep.describe.config import DescribeError
    from fineprep.describe.executors import DaskExecutor, LocalExecutor, PoolExecutor

    if scheduler and procs > 1:
        raise DescribeError("use either --procs or --scheduler, not both")
    if scheduler:
        return DaskExecutor(scheduler)
    if procs > 1:
        return PoolExecutor(procs, gpus.split(",") if gpus else None)
    return LocalExecutor()


def _report(s) -> None:
    if s.described or s.failed:
        pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        typer.echo(
            f"described {s.described}, failed {s.failed}, skipped {s.skipped} (already done) of {s.selected}; "
            f"{s.clips_per_s:.2f} clips/s, {s.tokens_per_s:.1f} output tok/s; "
            f"leak rate {pct(s.leak_before)} raw -> {pct(s.leak_after)} refined; {len(s.parts)} part(s) written")


def register(app: typer.Typer) -> None:
    app.command("describe")(describe)
