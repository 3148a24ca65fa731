"""`finetrain eval`, `finetrain predict` and `finetrain report`: using and reading a trained run.

Heavy imports (torch, matplotlib, the model) happen inside the commands so `--help` stays fast. Each
command turns the trainer's own errors (`FinetrainError`), the store contract's (`SchemaError`), a
missing file and the machine's errors (disk full, read-only, permissions) into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _one_line(call: Callable, *args, **kwargs):
    """`call(...)`, with an expected failure printed as one line (exit code 2)."""
    from fineschema.errors import SchemaError
    from fineschema.oserrors import machine_error_line
    from finetrain.errors import FinetrainError

    try:
        return call(*args, **kwargs)
    except (FinetrainError, SchemaError, FileNotFoundError) as exc:
        _fail(" ".join(str(exc).split()))
    except Exception as exc:  # the machine's (disk full, read-only run folder, permissions): one line
        if (line := machine_error_line(exc, "finetrain")) is None:
            raise
        _fail(line)


def _report_runs(run: list[Path] | None, runs: list[Path] | None, merge: bool) -> list[Path]:
    all_runs = list(run or []) + list(runs or [])
    if not all_runs:
        _fail("give a run: `finetrain report --run RUN` or `finetrain report --merge RUN1 RUN2 ...`")
    if len(all_runs) > 1 and not merge:
        _fail("several runs given; add --merge to merge their folds into one report")
    for r in all_runs:
        if not r.is_dir():
            _fail(f"{r}: no run directory here")
    return all_runs


def report(
    run: list[Path] = typer.Option(None, "--run", help="Run directory (repeatable)."),
    runs: list[Path] = typer.Argument(None, help="More run directories (with --merge)."),
    merge: bool = typer.Option(False, "--merge", help="Merge the folds of several runs into one table."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/report)."),
    dataset: str | None = typer.Option(None, help="Dataset name, to flag missing folds (default: from the run)."),
    title: str | None = typer.Option(None, help="Title shown on the report."),
) -> None:
    """PNG + HTML report (loss/metric curves, confusion matrix, per-class recall, fold table) of a run.

    `finetrain report --run RUN`, or `finetrain report --merge RUN1 RUN2 ...` for folds run as separate jobs.
    """
    from finetrain.evaluate.report import render
    from finetrain.rundir import RunDir
    from finetrain.runinfo import run_dataset

    all_runs = _report_runs(run, runs, merge)
    if out is None:
        out = RunDir(all_runs[0]).report if len(all_runs) == 1 else Path(
            os.path.commonpath([p.resolve() for p in all_runs])) / "merged-report"
    written = _one_line(render, all_runs, out, title=title, dataset=dataset or run_dataset(all_runs[0]))
    for kind, path in written.items():
        typer.echo(f"{kind:9s} {path}")
    if "markdown" in written:
        typer.echo(written["markdown"].read_text())


def evaluate(
    run: Path = typer.Option(..., "--run", help="A run folder (one fold, or a `--fold all` run with fold<K>/)."),
    store: Path = typer.Option(..., "--store", help="The store to evaluate on: the run's own or another dataset's."),
    fold: int | None = typer.Option(None, "--fold", help="Only the model trained on this fold."),
    clips: str = typer.Option("auto", "--clips", help="test: the store's test clips of each model's fold; "
                              "all: every labelled clip; auto: test when the store has that fold."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default RUN/eval/STORE-NAME)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    descriptions_model: str | None = typer.Option(
        None, "--descriptions-model", help="The describer whose descriptions the clips are scored with "
        "(sets the run config's data.descriptions_model); needed when the store holds several sets and "
        "the run named none."),
    descriptions_prompt: str | None = typer.Option(
        None, "--descriptions-prompt", help="The prompt id (or hash) of that describer "
        "(data.descriptions_prompt); needed when it has several."),
) -> None:
    """Score a trained run on a store; classes of another dataset are matched by canonical name.

    Writes per-clip predictions (Parquet) and the fold table (JSON + Markdown).
    """
    from finetrain.evaluate.crossdata import DescriptionSet, evaluate_run

    if not run.is_dir():
        _fail(f"{run}: no run directory here")
    chosen = DescriptionSet(descriptions_model, descriptions_prompt)
    table = _one_line(evaluate_run, run, store, out=out, fold=fold, clips=clips, device=device, descriptions=chosen)
    typer.echo(table["paths"]["markdown_text"])
    typer.echo(f"fold table: {table['paths']['json']}")


def _print_predictions(results, run: Path, top_k: int) -> None:
    from rich.console import Console
    from rich.table import Table

    random = any(r.random_weights for r in results)
    table = Table(title=f"finetrain predict ({run})" + (": random CLIP weights, the probabilities mean nothing"
                                                          if random else ""))
    table.add_column("video")
    for i in range(top_k):
        table.add_column(f"#{i + 1}")
    for r in results:
        cells = [f"{name} {100 * p:.1f}%" for name, p in r.top] if r.top else [f"[red]{r.status}[/]: {r.error}"]
        table.add_row(r.path, *cells)
    Console().print(table)


def predict(
    videos: list[Path] = typer.Argument(..., help="Video files (or folders of frames) to classify."),
    run: Path = typer.Option(..., "--run", help="A trained run folder (or one fold<K>/ sub-run)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many classes to show per video."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    landmarker: Path | None = typer.Option(None, "--landmarker", help="face_landmarker.task (default: bundled)."),
    fold: int | None = typer.Option(None, "--fold", help="For a `--fold all` run: the fold whose model to use "
                                    "(default: the lowest)."),
    parser_weights: Path | None = typer.Option(None, "--parser-weights", help="The learned parser's weights, for a "
                                               "model trained on a `--parser facexformer` store."),
    max_pixels: int | None = typer.Option(None, "--max-pixels", min=1, help="Refuse frames larger than this "
                                          "many pixels before decoding (default: fineprep extract's)."),
) -> None:
    """Top-k expression classes with probabilities for each video, extracted in-process by the pipeline
    with the settings of the store the model was trained on."""
    from rich.console import Console

    from finetrain.evaluate.predict import predict_videos, results_json
    from finetrain.train.streams import RANDOM_WEIGHTS_LINE

    results = _one_line(predict_videos, run, videos, top_k=top_k, device=device, landmarker=landmarker, fold=fold,
                        parser_weights=parser_weights, max_pixels=max_pixels)
    if any(r.random_weights for r in results):
        Console(stderr=True).print(f"[yellow]note:[/] {RANDOM_WEIGHTS_LINE.replace('this run', 'these predictions')}",
                                   highlight=False)
    if as_json:
        typer.echo(results_json(results))
    else:
        _print_predictions(results, run, top_k)
    if any(r.top is None for r in results):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
    app.command("predict")(predict)
    app.command("report")(report)
