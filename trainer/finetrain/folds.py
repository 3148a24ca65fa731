"""The fold table: per-fold and mean UAR/WAR with per-class recall, as JSON and Markdown.

Numbers are recomputed from the per-clip predictions files, never copied from logs, so a table
merged from folds that ran as separate jobs is the same as one written by `finetrain run --fold all`.
A run directory holds its test predictions at `RUN/predictions.parquet` (one fold) or
`RUN/fold<K>/predictions.parquet` (a `--fold all` run); a file may also hold several folds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .metrics import Scores, mean_std
from .predictions import PREDICTIONS_FILE, Predictions, read_predictions
from .runinfo import is_main_process, store_run_info, write_run_info

FOLD_TABLE_JSON = "fold_table.json"
FOLD_TABLE_MD = "fold_table.md"
FOLDS_PER_DATASET = {"dfew": 5, "mafw": 5, "mafw-compound": 5, "ferv39k": 1}


@dataclass
class FoldResult:
    fold: int | None
    scores: Scores
    source: str


def fold_results(preds: Predictions, source: str = "") -> list[FoldResult]:
    """One result per fold present in a predictions set (rows without a true label are ignored)."""
    out = []
    for fold in preds.fold_ids():
        part = preds.select([f == fold for f in preds.folds])
        if any(t is not None for t in part.true_labels):
            out.append(FoldResult(fold, part.scores(), source))
    return out


def prediction_files(run: str | Path) -> list[Path]:
    """Test predictions of a run: its own file and those of its `fold<K>/` sub-runs."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no run directory here")
    files = [run / PREDICTIONS_FILE] if (run / PREDICTIONS_FILE).is_file() else []
    files += sorted(run.glob(f"fold*/{PREDICTIONS_FILE}"), key=lambda p: p.parent.name)
    return files


def collect(runs: Sequence[str | Path]) -> list[FoldResult]:
    """Fold results of one or more runs; a fold found twice is an error naming both places."""
    seen: dict[int | None, FoldResult] = {}
    labels = None
    for run in runs:
        files = prediction_files(run)
        if not files:
            raise FileNotFoundError(
                f"{run}: no {PREDICTIONS_FILE} (the run has not finished a test evaluation; "
                f"run `finetrain eval --run {run}`)"
            )
        for path in files:
            preds = read_predictions(path)
            if labels is None:
                labels = preds.labels
            elif preds.labels != labels:
                raise ValueError(f"{path}: classes {preds.labels} differ from {labels} in the other runs")
            for res in fold_results(preds, str(path)):
                if res.fold in seen:
                    raise ValueError(
                        f"fold {res.fold} appears in both {seen[res.fold].source} and {res.source}; "
                        "merge runs that cover different folds"
                    )
                seen[res.fold] = res
    return [seen[k] for k in sorted(seen, key=lambda f: (f is None, f or 0))]


def build_table(results: Sequence[FoldResult], dataset: str | None = None) -> dict:
    """The fold table as a JSON-ready dict (recall values are fractions in 0..1; null where undefined)."""
    if not results:
        raise ValueError("no fold results to tabulate")
    labels = results[0].scores.labels
    folds = []
    for r in results:
        d = r.scores.to_dict()
        folds.append({"fold": r.fold, "source": r.source, **{k: d[k] for k in
                      ("count", "uar", "war", "per_class_recall", "support", "confusion")}})
    uar, uar_std = mean_std([r.scores.uar for r in results])
    war, war_std = mean_std([r.scores.war for r in results])
    per_class = {name: _nan_to_none(mean_std([r.scores.recall[name] for r in results])[0]) for name in labels}
    expected = FOLDS_PER_DATASET.get(dataset or "")
    present = [r.fold for r in results]
    table = {
        "dataset": dataset,
        "labels": list(labels),
        "folds": folds,
        "mean": {
            "uar": _nan_to_none(uar), "war": _nan_to_none(war),
            "uar_std": _nan_to_none(uar_std), "war_std": _nan_to_none(war_std),
            "per_class_recall": per_class,
            "folds": len(results),
        },
    }
    if expected is not None:
        missing = [k for k in range(1, expected + 1) if k not in present]
        table["expected_folds"] = expected
        table["missing_folds"] = missing
        table["complete"] = not missing
    return table


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def to_markdown(table: dict) -> str:
    """UAR/WAR and per-class recall in percent, one row per fold and a mean row."""
    labels = table["labels"]
    head = ["fold", "clips", "UAR", "WAR", *labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in table["folds"]:
        cells = ["–" if f["fold"] is None else str(f["fold"]), str(f["count"]), _pct(f["uar"]), _pct(f["war"])]
        cells += [_pct(f["per_class_recall"][n]) for n in labels]
        lines.append("| " + " | ".join(cells) + " |")
    m = table["mean"]
    uar = _pct(m["uar"]) + ("" if m["uar_std"] is None or m["folds"] < 2 else f" ± {100 * m['uar_std']:.2f}")
    war = _pct(m["war"]) + ("" if m["war_std"] is None or m["folds"] < 2 else f" ± {100 * m['war_std']:.2f}")
    cells = ["**mean**", str(sum(f["count"] for f in table["folds"])), uar, war]
    cells += [_pct(m["per_class_recall"][n]) for n in labels]
    lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if table.get("missing_folds"):
        missing = ", ".join(str(k) for k in table["missing_folds"])
        text += f"\nIncomplete: folds {missing} of {table['expected_folds']} have no results yet.\n"
    return text


def write_table(out_dir: str | Path, table: dict) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / FOLD_TABLE_JSON
    md = out / FOLD_TABLE_MD
    js.write_text(json.dumps(table, indent=2) + "\n")
    md.write_text(to_markdown(table))
    return js, md


def store_folds(info) -> list[int]:
    """Test folds present in a store (DFEW and MAFW 1..5, FERV39k 1); [] for a store without folds."""
    return sorted({int(f) for fs in info.test_folds for f in fs})


def parse_folds(text: str | None) -> list[int] | str | None:
    """`--fold` values: None, `all`, `3`, or `1,2`."""
    if text is None:
        return None
    text = text.strip().lower()
    if text == "all":
        return "all"
    try:
        folds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--fold must be a fold number, a comma list (1,2) or all; got {text!r}") from None
    if not folds or min(folds) < 1:
        raise ValueError(f"--fold must name folds from 1; got {text!r}")
    return folds


def run_folds(cfg, store: str | Path, out: str | Path, folds: list[int] | str = "all", resume: bool = False,
              mode: str = "supervised", text: str | None = None, console=None, progress: bool = True) -> dict:
    """Train and test each fold into `out/fold<K>/`, then write the fold table into `out`.

    A fold whose test results exist is skipped, so re-running `--fold all` after a crash only does
    what is missing (pass `--resume` to continue a fold that stopped half-way).
    """
    from rich.console import Console

    from .config import replace
    from .data import StoreInfo
    from .engine import TEST_JSON, train
    from .zeroshot import train_zero_shot

    console = console or Console(stderr=True)
    out = Path(out)
    info = StoreInfo.for_config(store, cfg)
    available = store_folds(info)
    if not available:
        raise ValueError(f"store {store} has no folds; train it with `finetrain run` without --fold")
    wanted = available if folds == "all" else list(folds)
    unknown = [k for k in wanted if k not in available]
    if unknown:
        raise ValueError(f"folds {unknown} are not in store {store}; its folds are {available}")
    main = is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_run_info(out, mode=mode, text=text, folds=wanted, **store_run_info(info))
    unfinished = []
    for k in wanted:
        sub = out / f"fold{k}"
        if (sub / TEST_JSON).is_file():
            console.print(f"fold {k}: finished earlier ({sub / TEST_JSON}), skipped")
            continue
        console.rule(f"fold {k} of {len(wanted)}" if folds == "all" else f"fold {k}")
        fold_cfg = replace(cfg, run={"fold": k})
        part_resume = resume and (sub / "checkpoints").is_dir()
        if mode == "zero-shot":
            train_zero_shot(fold_cfg, store, sub, text=text or "captions", resume=part_resume, console=console,
                            progress=progress)
        else:
            summary = train(fold_cfg, store, sub, resume=part_resume, console=console, progress=progress)
            if main:
                write_run_info(sub, mode=mode, fold=k, **store_run_info(info))
            if summary.get("stopped"):
                unfinished.append(k)
    if not main:
        return {}
    if unfinished:
        console.print(f"folds {unfinished} stopped before their test (run.max_steps); the fold table is written "
                      "once every fold has finished: run the same command again with --resume")
        return {"unfinished": unfinished}
    table = build_table(collect([out]), info.attrs.get("dataset"))
    js, md = write_table(out, table)
    console.print(to_markdown(table), soft_wrap=True, highlight=False)
    console.print(f"fold table: {js} and {md}")
    return table
