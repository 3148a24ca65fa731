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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FinetrainError
from ..rundir import FOLD_TABLE_JSON, FOLD_TABLE_MD, PREDICTIONS_FILE, TEST_JSON, RunDir
from .metrics import Scores, mean_std
from .predictions import Predictions, read_predictions

__all__ = ["FOLD_TABLE_JSON", "FOLD_TABLE_MD", "PREDICTIONS_FILE", "FoldResult", "FoldTableError", "NoRunError",
           "build_table", "collect", "fold_results", "prediction_files", "store_folds", "to_markdown", "write_table"]
FOLDS_PER_DATASET = {"dfew": 5, "mafw": 5, "mafw-compound": 5, "ferv39k": 1}


class FoldTableError(FinetrainError, ValueError):
    """Runs that do not make one table: a fold found twice, different class sets, nothing to tabulate."""


class NoRunError(FinetrainError, FileNotFoundError):
    """A path that is not a run folder, or a run without test predictions yet."""


@dataclass
class FoldResult:
    fold: int | None
    scores: Scores
    source: str
    # what the run's test.json says the numbers cover: clips (listed, scored, unscored), partial, streams,
    # paper_row, random_weights (empty for predictions without a test.json beside them)
    record: dict = field(default_factory=dict)


RECORD_KEYS = ("clips", "partial", "streams", "streams_dropped", "paper_row", "random_weights", "random_descriptions")


def read_test_record(predictions: Path) -> dict:
    """The coverage keys of the test.json beside a predictions file ({} when there is none)."""
    path = Path(predictions).with_name(TEST_JSON)
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: saved[k] for k in RECORD_KEYS if isinstance(saved, dict) and k in saved}


def fold_results(preds: Predictions, source: str = "") -> list[FoldResult]:
    """One result per fold present in a predictions set (rows without a true label are ignored)."""
    out = []
    for fold in preds.fold_ids():
        part = preds.select([f == fold for f in preds.folds])
        if any(t is not None for t in part.true_labels):
            out.append(FoldResult(fold, part.scores(), source, read_test_record(Path(source)) if source else {}))
    return out


def prediction_files(run: str | Path) -> list[Path]:
    """Test predictions of a run: its own file and those of its `fold<K>/` sub-runs."""
    run = RunDir(run)
    if not run.root.is_dir():
        raise NoRunError(f"{run.root}: no run directory here")
    subs = [sub.predictions for sub in run.folds().values()]
    return [path for path in (run.predictions, *subs) if path.is_file()]


def collect(runs: Sequence[str | Path]) -> list[FoldResult]:
    """Fold results of one or more runs; a fold found twice is an error naming both places."""
    seen: dict[int | None, FoldResult] = {}
    labels = None
    for run in runs:
        files = prediction_files(run)
        if not files:
            raise NoRunError(
                f"{run}: no {PREDICTIONS_FILE} (the run has not finished a test evaluation; "
                f"run `finetrain eval --run {run}`)"
            )
        for path in files:
            preds = read_predictions(path)
            if labels is None:
                labels = preds.labels
            elif preds.labels != labels:
                raise FoldTableError(f"{path}: classes {preds.labels} differ from {labels} in the other runs")
            for res in fold_results(preds, str(path)):
                if res.fold in seen:
                    raise FoldTableError(
                        f"fold {res.fold} appears in both {seen[res.fold].source} and {res.source}; "
                        "merge runs that cover different folds"
                    )
                seen[res.fold] = res
    return [seen[k] for k in sorted(seen, key=lambda f: (f is None, f or 0))]


def build_table(results: Sequence[FoldResult], dataset: str | None = None) -> dict:
    """The fold table as a JSON-ready dict (recall values are fractions in 0..1; null where undefined)."""
    if not results:
        raise FoldTableError("no fold results to tabulate")
    labels = results[0].scores.labels
    folds = []
    for r in results:
        d = r.scores.to_dict()
        folds.append({"fold": r.fold, "source": r.source, **{k: d[k] for k in
                      ("count", "uar", "war", "per_class_recall", "support", "confusion")}, **r.record})
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
        **_coverage(folds),
    }
    if expected is not None:
        missing = [k for k in range(1, expected + 1) if k not in present]
        table["expected_folds"] = expected
        table["missing_folds"] = missing
        table["complete"] = not missing
    return table


def _coverage(folds: list[dict]) -> dict:
    """Table-wide: whether any fold is partial, the streams and paper row (when the folds agree), and
    whether any fold's CLIP had random weights."""
    streams = {tuple(f["streams"]) for f in folds if f.get("streams")}
    rows = {f.get("paper_row") for f in folds if f.get("streams")}
    return {"partial": any(f.get("partial") for f in folds),
            "streams": list(next(iter(streams))) if len(streams) == 1 else None,
            "paper_row": next(iter(rows)) if len(rows) == 1 else None,
            "random_weights": any(f.get("random_weights") for f in folds)}


def clips_cell(f: dict) -> str:
    """A fold's clip count as a person reads it: '3 of 5 (partial: 2 missing)', or the count."""
    clips = f.get("clips")
    if not clips:
        return str(f["count"])
    text = f"{clips['scored']} of {clips['listed']}"
    if clips.get("unscored"):
        text += " (partial: " + ", ".join(f"{n} {k}" for k, n in clips["unscored"].items()) + ")"
    return text


def coverage_lines(table: dict) -> list[str]:
    """The sentences under a fold table: partial folds, streams and paper row, random weights."""
    lines = []
    partial = [str(f["fold"]) for f in table["folds"] if f.get("partial")]
    if partial:
        lines.append(f"Partial: fold(s) {', '.join(partial)} could not score every listed test clip; their UAR/WAR "
                     "are not the protocol's numbers.")
    if table.get("streams"):
        lines.append(f"Streams: {', '.join(table['streams'])} (paper row: {table.get('paper_row') or 'none'}).")
    if table.get("random_weights"):
        lines.append("Random CLIP weights: these numbers check the plumbing, they are not a result.")
    return lines


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def pct_cell(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def to_markdown(table: dict) -> str:
    """UAR/WAR and per-class recall in percent, one row per fold and a mean row."""
    labels = table["labels"]
    head = ["fold", "clips", "UAR", "WAR", *labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in table["folds"]:
        cells = ["–" if f["fold"] is None else str(f["fold"]), clips_cell(f), pct_cell(f["uar"]), pct_cell(f["war"])]
        cells += [pct_cell(f["per_class_recall"][n]) for n in labels]
        lines.append("| " + " | ".join(cells) + " |")
    m = table["mean"]
    uar = pct_cell(m["uar"]) + ("" if m["uar_std"] is None or m["folds"] < 2 else f" ± {100 * m['uar_std']:.2f}")
    war = pct_cell(m["war"]) + ("" if m["war_std"] is None or m["folds"] < 2 else f" ± {100 * m['war_std']:.2f}")
    cells = ["**mean**" + (" (partial)" if table.get("partial") else ""), str(sum(f["count"] for f in table["folds"])),
             uar, war]
    cells += [pct_cell(m["per_class_recall"][n]) for n in labels]
    lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    for line in coverage_lines(table):
        text += f"\n{line}\n"
    if table.get("missing_folds"):
        missing = ", ".join(str(k) for k in table["missing_folds"])
        text += f"\nIncomplete: folds {missing} of {table['expected_folds']} have no results yet.\n"
    return text


def write_table(out_dir: str | Path, table: dict) -> tuple[Path, Path]:
    out = RunDir(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    js, md = out.fold_table_json, out.fold_table_md
    js.write_text(json.dumps(table, indent=2) + "\n")
    md.write_text(to_markdown(table))
    return js, md


def store_folds(info) -> list[int]:
    """Test folds present in a store (DFEW and MAFW 1..5, FERV39k 1); [] for a store without folds."""
    return sorted({int(f) for fs in info.test_folds for f in fs})
