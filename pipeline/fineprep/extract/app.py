"""What `fineprep extract` does, callable from Python: index, plan, prepare the store, run, summarise."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fineschema import labels as fl
from fineschema import layout, tables

from .. import storelock
from ..errors import FineprepError
from . import faces, parsing, runner, semaphores, store
from .clip import Settings


class ExtractError(FineprepError, ValueError):
    """A problem with the whole job (dataset layout, model file, store settings): one line, then exit."""


def extract_dataset(*, dataset: str, root: Path, out: Path, frames: int = 16, size: int = 224,
                    source: str | None = None, labels_csv: Path | None = None, workers: int | None = None,
                    scheduler: str | None = None, limit: int | None = None, batch_size: int = 16,
                    overwrite: bool = False, landmarker: Path | None = None, margin: float = 0.6,
                    landmark_mode: str = "image", strict: bool = False, max_pixels: int | None = None,
                    memory_limit: str | None = None, parser: str = "mesh", parser_weights: Path | None = None,
                    face: str = "primary", min_found_ratio: float = 0.25,
                    console: Console | None = None) -> runner.Outcome:
    from ..datasets import SOURCES, DatasetLayoutError, index_dataset, index_report

    console = console or Console(stderr=True)
    root, out = Path(root).resolve(), Path(out).resolve()
    if dataset not in SOURCES:
        raise ExtractError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    source = source or SOURCES[dataset][0]
    try:
        model_path, sha = faces.resolve_landmarker(landmarker)
    except faces.ModelError as exc:
        raise ExtractError(str(exc)) from None
    if sha != faces.DEFAULT_LANDMARKER_SHA256:
        console.print(f"note: landmarker {model_path.name} sha256 {sha[:12]}... differs from the default model")
    try:
        entries = index_dataset(dataset, root, source, labels_csv, strict=strict) if labels_csv else \
            index_dataset(dataset, root, source, strict=strict)
    except (DatasetLayoutError, ValueError) as exc:
        raise ExtractError(str(exc).splitlines()[0]) from None
    if not entries:
        raise ExtractError(f"the {dataset} index of {root} (source {source}) lists no clips")
    for line in index_report(entries):
        console.print(f"[yellow]{line}")
    return extract_entries(entries, dataset=dataset, source=source, root=root, out=out, frames=frames, size=size,
                           workers=workers, scheduler=scheduler, limit=limit, batch_size=batch_size,
                           overwrite=overwrite, model_path=model_path, model_sha256=sha, margin=margin,
                           landmark_mode=landmark_mode, max_pixels=max_pixels, memory_limit=memory_limit,
                           parser=parser, parser_weights=parser_weights, face=face,
                           min_found_ratio=min_found_ratio, console=console)


def _one_writer(fn):
    """Hold the store's writer lock for the whole job (prepare, every batch, the manifest); the Dask
    workers write chunks and parts for this process, which holds it until the job ends or dies."""

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(storelock.writer_lock(Path(kwargs["out"]).resolve()))
            except storelock.StoreLocked as exc:
                raise ExtractError(str(exc)) from None
            return fn(*args, **kwargs)

    return locked


@_one_writer
def extract_entries(entries: list, *, dataset: str, source: str, root: Path, out: Path, frames: int, size: int,
                    workers: int | None, scheduler: str | None, limit: int | None, batch_size: int,
                    overwrite: bool, model_path: Path, model_sha256: str, margin: float,
                    console: Console, landmark_mode: str = "image", max_pixels: int | None = None,
                    memory_limit: str | None = None, parser: str = "mesh",
                    parser_weights: Path | None = None, face: str = "primary",
                    min_found_ratio: float = 0.25) -> runner.Outcome:
    """Extract already-indexed clips (`ClipEntry` list) into the store at `out`."""
    from ..datasets import LABEL_SET

    sha = model_sha256
    plan = runner.make_plan(entries, batch_size, limit)
    settings = Settings(frames=frames, size=size, margin=margin, landmark_mode=landmark_mode, parser=parser,
                        parser_weights=str(Path(parser_weights).resolve()) if parser_weights else None,
                        face=face, min_found_ratio=min_found_ratio)
    try:
        parser_record = parsing.parser_record(parser, parser_weights)
    except parsing.ParserError as exc:
        raise ExtractError(str(exc)) from None
    if max_pixels is not None:
        settings.max_pixels = max_pixels
    label_set = LABEL_SET.get(dataset, dataset)
    attrs = store.store_attrs(
        dataset=dataset, source=source, label_set=label_set, landmark_sha256=sha,
        settings={**settings.as_attrs(), "batch_size": batch_size}, num_clips=plan.num_clips,
        plan_sha256=plan.digest, parser=parser_record, detector_sha256=faces.detector_sha256(model_path),
    )
    try:
        resumed = store.prepare(out, attrs, overwrite, note=lambda line: console.print(f"note: {line}"))
    except store.SettingsMismatch as exc:
        raise ExtractError(str(exc)) from None
    console.print(f"{dataset} ({source}): {len(plan.entries)} clips indexed, {plan.num_clips} to extract "
                  f"in {len(plan.batches)} batches of {batch_size}; {len(plan.final)} settled by the index"
                  + ("; resuming" if resumed else ""))
    done = store.done_batches(out)
    if resumed:
        store.remove_partial_chunks(out, [i for b, clips in enumerate(plan.batches) if b not in done
                                          for i, _ in clips])
    if done >= set(range(len(plan.batches))):
        # Nothing left to extract: no cluster, just the index part and the manifest.
        client = cluster = None
    else:
        if not scheduler:
            if orphans := semaphores.remove_orphaned_semaphores():
                console.print(f"note: removed {orphans} semaphores left in /dev/shm by killed runs")
            for line in runner.resource_warnings(workers, memory_limit or runner.DEFAULT_MEMORY_LIMIT,
                                                 frames=frames, size=size):
                console.print(f"[yellow]warning: {line}")
        client, cluster = runner.start_client(workers, scheduler, console,
                                              memory_limit=memory_limit or runner.DEFAULT_MEMORY_LIMIT)
    try:
        outcome = runner.run(plan, root=root, out=out, settings=settings, model_path=str(model_path),
                             label_names=fl.label_set(label_set), client=client, console=console)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print_summary(outcome, out, console)
    return outcome


def print_summary(outcome: runner.Outcome, out: Path, console: Console) -> None:
    table = Table(title=f"extract summary: {out}")
    table.add_column("status")
    table.add_column("clips", justify="right")
    for status in tables.STATUSES:
        if outcome.statuses.get(status):
            table.add_row(status, str(outcome.statuses[status]))
    table.add_row("[bold]total", f"[bold]{outcome.manifest_rows}")
    console.print(table)
    extracted = sum(sum(r.statuses.values()) for r in outcome.reports)
    if extracted:
        console.print(f"{extracted} clips in {outcome.seconds:.1f} s ({extracted / outcome.seconds:.2f} clips/s); "
                      f"{outcome.skipped_batches} batches were already done")
    elif outcome.skipped_batches:
        console.print(f"nothing to do: all {outcome.skipped_batches} batches were already done")
    console.print(f"manifest: {out / layout.MANIFEST_FILE}")
