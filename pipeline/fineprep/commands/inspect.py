"""`fineprep show`, `fineprep stats`, `fineprep export`, `fineprep validate`: read-only looks at a store."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..choices import ExportFormat


def _fail(exc: Exception | str) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _errors() -> tuple[type[Exception], ...]:
    """What a read-only command reports in one line: fineprep's errors and the contract's."""
    from fineschema.errors import SchemaError

    from ..errors import FineprepError

    return FineprepError, SchemaError


def show(
    store: Path = typer.Option(..., "--store", help="Store folder (manifest.parquet + arrays.zarr)."),
    clip: str = typer.Option(..., "--clip", help="Clip id as in the manifest (e.g. 00001, Action/Sad/0010)."),
    out: Path = typer.Option(Path("sheet.png"), "--out", help="PNG file to write."),
    frames: int = typer.Option(0, "--frames", min=0, help="Frames to show, evenly spread (0 = all stored)."),
) -> None:
    """Contact sheet of one clip: stored frames, parsing overlay, landmarks, label, caption, description."""
    from ..inspect import open_store
    from ..inspect.show import render_sheet

    try:
        path = render_sheet(open_store(store), clip, out, frames or None)
    except _errors() as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {path}")


def stats(
    store: Path = typer.Option(..., "--store", help="Store folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON instead of tables."),
) -> None:
    """Clips per class, fold and status; face-found ratio; bytes per clip on disk."""
    from rich.console import Console

    from ..inspect import open_store
    from ..inspect.stats import compute_stats, print_stats

    try:
        numbers = compute_stats(open_store(store))
    except _errors() as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(numbers, indent=2))
    else:
        print_stats(numbers, Console())


def export(
    store: Path = typer.Option(..., "--store", help="Store folder."),
    out: Path = typer.Option(..., "--out", help="Folder for the annotation files (and frame folders)."),
    fmt: ExportFormat = typer.Option(ExportFormat.DFER_CLIP, "--format", help="Output format: dfer-clip (`path "
                                     "num_frames label` .txt) or mae-dfer (`frame_dir label` .csv, MAE-DFER's folders)."),
    frames: bool = typer.Option(False, "--frames/--no-frames",
                                help="Write the stored face crops as JPG folders and point the files at them."),
    order: str = typer.Option(None, "--order", help="Label order: dfer-clip, mae-dfer, s2d or emoclip (default: "
                              "the format's own)."),
    absolute: bool = typer.Option(False, "--absolute", help="Absolute paths instead of paths relative to --out."),
    root: Path = typer.Option(None, "--root",
                              help="With --no-frames: the dataset root to prefix source paths with."),
) -> None:
    """Annotation files per fold in a public DFER repo's format and label order."""
    from rich.console import Console
    from rich.progress import track

    from ..inspect import open_store
    from ..inspect.export import export_annotations

    try:
        summary = export_annotations(open_store(store), out, fmt=str(fmt), order=order, frames=frames,
                                     absolute=absolute, dataset_root=root, progress=track)
    except _errors() as exc:
        raise _fail(exc) from None
    except Exception as exc:  # the machine's (disk full, read-only, permissions): one line
        from fineschema.oserrors import machine_error_line

        if (line := machine_error_line(exc, f"export into {out}")) is None:
            raise
        raise _fail(line) from None
    console = Console()
    for name, n in summary["files"].items():
        console.print(f"{out / name}: {n} clips")
    for reason, n in summary["skipped"].items():
        console.print(f"[yellow]skipped {n} clips: {reason}")
    if summary["paths_to_videos"]:
        console.print(f"[yellow]{summary['paths_to_videos']} paths point at video files; the DFER repos read "
                      "frame folders, so pass --frames to write the stored crops")


def validate(
    store: Path = typer.Option(..., "--store", help="Store folder."),
    deep: bool = typer.Option(False, "--deep", help="Also decode every chunk of every ok clip (reads the whole "
                              "store); by default metadata, the manifest and chunk presence are checked."),
) -> None:
    """Check a store against the contract: one line per problem, exit 1 when there is any."""
    from fineschema import validate_store

    problems = validate_store(store, deep=deep)
    for problem in problems:
        typer.echo(f"{store}: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{store}: valid ({'deep' if deep else 'metadata and chunk presence'} check)")


def register(app: typer.Typer) -> None:
    app.command("show")(show)
    app.command("stats")(stats)
    app.command("export")(export)
    app.command("validate")(validate)
