"""`finetrain eval`, `finetrain predict` and `finetrain report`: using and reading a trained run.

Heavy imports (torch, matplotlib, the model) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


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
    from finetrain import report as R
    from finetrain.folds import run_dataset

    all_runs = list(run or []) + list(runs or [])
    if not all_runs:
        _fail("give a run: `finetrain report --run RUN` or `finetrain report --merge RUN1 RUN2 ...`")
    if len(all_runs) > 1 and not merge:
        _fail("several runs given; add --merge to merge their folds into one report")
    for r in all_runs:
        if not r.is_dir():
            _fail(f"{r}: no run directory here")
    if out is None:
        out = all_runs[0] / R.REPORT_DIR if len(all_runs) == 1 else Path(
            os.path.commonpath([p.resolve() for p in all_runs])) / "merged-report"
    dataset = dataset or run_dataset(all_runs[0])
    try:
        written = R.render(all_runs, out, title=title, dataset=dataset)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    for kind, path in written.items():
        typer.echo(f"{kind:9s} {path}")
    if "markdown" in written:
        typer.echo(written["markdown"].read_text())


def register(app: typer.Typer) -> None:
    app.command("report")(report)
