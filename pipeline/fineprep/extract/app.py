"""What `fineprep extract` does, callable from Python: index, plan, prepare the store, run, summarise."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fineschema import ExtractSettings, layout, tables
from fineschema import labels as fl

from .. import storelock
from ..errors import FineprepError
from ..interrupt import quiet_cluster_on_interrupt, workers_ignore_sigint
from . import faces, parsing, runner, semaphores, store
from .config import ExtractConfig


class ExtractError(FineprepError, ValueError):
    """A problem with the whole job (dataset layout, model file, store settings): one line, then exit."""


def extract_dataset(dataset: str, root: Path, out: Path, config: ExtractConfig | None = None, *,
                    console: Console | None = None) -> runner.Outcome:
    """Index `dataset` at `root` (its official layout) and extract it into the store at `out`."""
    from fineschema.errors import SchemaError

    from ..datasets import SOURCES, index_dataset, index_report

    config = config or ExtractConfig()
    console = console or Console(stderr=True)
    dataset = str(dataset)  # a `choices.Dataset` from the command: the store records the plain word
    root, out = Path(root).resolve(), Path(out).resolve()
    if dataset not in SOURCES:
        raise ExtractError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}")
    source = str(config.source or SOURCES[dataset][0])  # the plain word: messages below quote it
    try:
        model_path, sha = faces.resolve_landmarker(config.landmarker)
    except faces.ModelError as exc:
        raise ExtractError(str(exc)) from None
    if sha != faces.DEFAULT_LANDMARKER_SHA256:
        console.print(f"note: landmarker {model_path.name} sha256 {sha[:12]}... differs from the default model")
    try:
        entries = index_dataset(dataset, root, source, config.labels, strict=config.strict)
    except (FineprepError, SchemaError) as exc:
        raise ExtractError(str(exc).splitlines()[0]) from None
    if not entries:
        raise ExtractError(f"the {dataset} index of {root} (source {source}) lists no clips")
    for line in index_report(entries):
        console.print(f"[yellow]{line}")
    return extract_entries(entries, dataset=dataset, root=root, out=out, config=replace(config, source=source),
                           model_path=model_path, model_sha256=sha, console=console)


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
def extract_entries(entries: list, *, dataset: str, root: Path, out: Path, config: ExtractConfig, model_path: Path,
                    model_sha256: str, console: Console) -> runner.Outcome:
    """Extract already-indexed clips (`ClipEntry` list) into the store at `out`; `config.source` names
    the copy they were indexed from (recorded in the store)."""
    from ..datasets import LABEL_SET, SOURCES

    if config.source is None:
        config = replace(config, source=SOURCES.get(dataset, ("all",))[0])
    plan = runner.make_plan(entries, config.batch_size, config.limit)
    label_set = LABEL_SET.get(dataset, dataset)
    resumed = _prepare_store(out, dataset, label_set, plan, config, model_path, model_sha256, console)
    console.print(f"{dataset} ({config.source}): {len(plan.entries)} clips indexed, {plan.num_clips} to extract "
                  f"in {len(plan.batches)} batches of {config.batch_size}; {len(plan.final)} settled by the index"
                  + ("; resuming" if resumed else ""))
    done = store.done_batches(out)
    if resumed:
        store.remove_partial_chunks(out, [i for b, clips in enumerate(plan.batches) if b not in done
                                          for i, _ in clips])
    if done >= set(range(len(plan.batches))):
        # Nothing left to extract: no cluster, just the index part and the manifest.
        client = cluster = None
    else:
        client, cluster = _start_cluster(config, console)
    try:
        with quiet_cluster_on_interrupt():
            outcome = runner.run(plan, root=root, out=out, config=config, model_path=str(model_path),
                                 label_names=fl.label_set(label_set), client=client, console=console)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        semaphores.release_records()
    print_summary(outcome, out, console)
    return outcome


def _prepare_store(out: Path, dataset: str, label_set: str, plan: runner.Plan, config: ExtractConfig,
                   model_path: Path, model_sha256: str, console: Console) -> bool:
    """Create the store, or check that the one there holds these settings; True when it is a resume."""
    try:
        parser_record = parsing.parser_record(config.parser, config.parser_weights)
    except parsing.ParserError as exc:
        raise ExtractError(str(exc)) from None
    attrs = store.store_attrs(
        dataset=dataset, source=str(config.source), label_set=label_set, landmark_sha256=model_sha256,
        settings=config.store_settings(), num_clips=plan.num_clips, plan_sha256=plan.digest,
        parser=parser_record, detector_sha256=faces.detector_sha256(model_path),
        detectors=faces.detector_records(model_path, config.second_detector),
    )
    ExtractSettings.from_attrs(attrs)  # the contract's typed record must read them back whole
    try:
        return store.prepare(out, attrs, config.overwrite, note=lambda line: console.print(f"note: {line}"))
    except store.SettingsMismatch as exc:
        raise ExtractError(str(exc)) from None


def _start_cluster(config: ExtractConfig, console: Console):
    """A Dask client (and the local cluster it runs on, unless `config.scheduler` names one)."""
    if not config.scheduler:
        if orphans := semaphores.remove_orphaned_semaphores():
            console.print(f"note: removed {orphans} semaphores left in /dev/shm by killed runs")
        for line in runner.resource_warnings(config.workers, config.memory_limit, frames=config.frames,
                                             size=config.size):
            console.print(f"[yellow]warning: {line}")
    with workers_ignore_sigint():  # Ctrl-C reaches the whole process group: this process handles it
        client, cluster = runner.start_client(config.workers, config.scheduler, console,
                                              memory_limit=config.memory_limit)
    if not config.scheduler:
        semaphores.record_own_semaphores()  # what the next run may remove if this one is killed
    return client, cluster


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
