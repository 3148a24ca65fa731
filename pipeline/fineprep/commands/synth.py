"""`fineprep synth`: a small dataset in DFEW / FERV39k / MAFW's official layout, from real face photos."""

from __future__ import annotations

from pathlib import Path

import typer

from ..choices import Dataset, Scene


def _frames_range(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not A,B (two integers, e.g. 20,48)") from None
    return a, b


def synth(
    dataset: Dataset = typer.Option(..., "--dataset", help="Layout to write: dfew, ferv39k, mafw, or folder "
                                "(videos under clips/ and a labels.csv for `extract --dataset folder`)."),
    out: Path = typer.Option(..., "--out", help="Dataset root to create (new or empty folder)."),
    clips_per_class: int = typer.Option(2, "--clips-per-class", min=1, help="Clips rendered per class."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same dataset."),
    size: int = typer.Option(256, "--size", min=64, help="Side of the raw video frames in pixels."),
    frames_range: str = typer.Option("20,48", "--frames-range", help="Clip length range A,B in frames."),
    scene: Scene = typer.Option(Scene.FACE, "--scene", help="face: one face fills the frame; wild: faces of 40-150 px "
                              "in 640x360 / 1080p frames with 2-4 people, cuts, dark, blurred and compressed "
                              "shots, and ground_truth.parquet (true primary face boxes, cuts) at the root."),
    portraits: Path = typer.Option(None, "--portraits", help="wild: a folder of real portrait photos "
                                   "(.jpg/.png) that join the synthetic people."),
) -> None:
    """Write a small synthetic dataset in an official layout (real faces warped along their mesh)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fineschema.errors import SchemaError

    from ..errors import FineprepError
    from ..synth import make_dataset, read_provenance

    console = Console(stderr=True)
    rng = _frames_range(frames_range)
    with Progress(TextColumn(f"[bold]synth {dataset}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("render", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            root = make_dataset(dataset, out, clips_per_class=clips_per_class, seed=seed, size=size,
                                frames_range=rng, scene=scene, portraits=portraits, progress=tick)
        except (FineprepError, SchemaError) as err:
            console.print(f"[red]error:[/red] {err}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
    prov = read_provenance(root)
    extra = " with ground_truth.parquet" if scene == "wild" else ""
    console.print(f"{dataset}: {len(prov['clips'])} clips at {root}{extra}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
