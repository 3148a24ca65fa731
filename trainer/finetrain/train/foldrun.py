"""`finetrain run --fold all` (or `--fold 1,2`): one sub-run per fold into `RUN/fold<K>/`, then the fold table.

The driver above the recipe: it knows folds and sub-run folders, the recipe knows one run. The table
itself (`finetrain.score.folds`) is built from the sub-runs' predictions files, never from their logs.
"""

from __future__ import annotations

from pathlib import Path

from fineschema.nolinks import refuse_links_under

from ..errors import FinetrainError
from ..rundir import RunDir
from ..runinfo import is_main_process, store_run_info, write_run_info
from ..score.folds import build_table, collect, store_folds, to_markdown, write_table
from .resume_check import check_own_store

MODES = ("supervised", "zero-shot")


class FoldError(FinetrainError, ValueError):
    """A `--fold` value that names no fold of the store, or a store without folds."""


def parse_folds(text: str | None) -> list[int] | str | None:
    """`--fold` values: None, `all`, `3`, or `1,2`."""
    if text is None:
        return None
    text = text.strip().lower()
    if text == "all":
        return "all"
    try:
        folds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:  # int() of a word
        raise FoldError(f"--fold must be a fold number, a comma list (1,2) or all; got {text!r}") from None
    if not folds or min(folds) < 1:
        raise FoldError(f"--fold must name folds from 1; got {text!r}")
    return folds


def wanted_folds(info, store, folds: list[int] | str) -> list[int]:
    """The folds to run, checked against the store's."""
    available = store_folds(info)
    if not available:
        raise FoldError(f"store {store} has no folds; train it with `finetrain run` without --fold")
    wanted = available if folds == "all" else list(folds)
    unknown = [k for k in wanted if k not in available]
    if unknown:
        raise FoldError(f"folds {unknown} are not in store {store}; its folds are {available}")
    return wanted


def train_fold(cfg, store, sub: RunDir, k: int, resume: bool, mode: str, text: str | None, console,
               progress: bool) -> dict:
    """One fold's run into its sub-run folder (resumed where it has checkpoints and --resume was given)."""
    from ..config import replace
    from .recipe import train
    from .zeroshot import train_zero_shot

    fold_cfg = replace(cfg, run={"fold": k})
    part_resume = resume and sub.checkpoints.is_dir()
    if mode == "zero-shot":
        return train_zero_shot(fold_cfg, store, sub.root, text=text or "captions", resume=part_resume,
                               console=console, progress=progress)
    return train(fold_cfg, store, sub.root, resume=part_resume, console=console, progress=progress)


def run_folds(cfg, store: str | Path, out: str | Path, folds: list[int] | str = "all", resume: bool = False,
              mode: str = "supervised", text: str | None = None, console=None, progress: bool = True) -> dict:
    """Train and test each fold into `out/fold<K>/`, then write the fold table into `out`.

    A fold whose test results exist is skipped, so re-running `--fold all` after a crash only does
    what is missing (pass `--resume` to continue a fold that stopped half-way).
    """
    from rich.console import Console

    from ..data.store import StoreInfo

    console = console or Console(stderr=True)
    run = RunDir(out)
    info = StoreInfo.for_config(store, cfg)
    wanted = wanted_folds(info, store, folds)
    main = is_main_process()
    refuse_links_under(run.root)
    check_own_store(run, info)
    if main:
        run.root.mkdir(parents=True, exist_ok=True)
        write_run_info(run.root, mode=mode, text=text, folds=wanted, **store_run_info(info))
    unfinished = []
    for k in wanted:
        sub = run.fold(k)
        if sub.finished:
            console.print(f"fold {k}: finished earlier ({sub.test_json}), skipped")
            continue
        console.rule(f"fold {k} of {len(wanted)}" if folds == "all" else f"fold {k}")
        if train_fold(cfg, store, sub, k, resume, mode, text, console, progress).get("stopped"):
            unfinished.append(k)
    if not main:
        return {}
    if unfinished:
        console.print(f"folds {unfinished} stopped before their test (run.max_steps); the fold table is written "
                      "once every fold has finished: run the same command again with --resume")
        return {"unfinished": unfinished}
    table = build_table(collect([run.root]), info.attrs.get("dataset"))
    js, md = write_table(run.root, table)
    console.print(to_markdown(table), soft_wrap=True, highlight=False)
    console.print(f"fold table: {js} and {md}")
    return table
