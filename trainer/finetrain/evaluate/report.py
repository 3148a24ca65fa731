"""A run's report: one PNG and one self-contained HTML page, rendered from the run's files only.

Inputs: the per-epoch metrics the trainer writes (`metrics.jsonl`, or `metrics.csv`, with the
columns of `fineschema.tables.METRICS`) and the per-clip test predictions (`predictions.parquet`),
in the run directory or its `fold<K>/` sub-runs. Nothing is re-evaluated; a report can be drawn on
a machine without the model or the store.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import FinetrainError
from ..rundir import METRICS_CSV, METRICS_JSONL, PREDICTIONS_FILE, RunDir
from ..score import folds

REPORT_PNG = "report.png"
REPORT_HTML = "report.html"
METRICS_FILES = (METRICS_JSONL, METRICS_CSV)  # the first one present is read


class ReportError(FinetrainError, ValueError):
    """A run file the report cannot read; the message names the file and line."""


def _num(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics JSONL or CSV file; numeric columns become floats (None when empty)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ReportError(f"{path}:{n}: not a JSON line") from None
    else:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        clean = {k: (v if k in ("run", "split") else _num(v)) for k, v in row.items()}
        out.append(clean)
    return out


def metrics_files(run: str | Path) -> list[tuple[int | None, Path]]:
    """(fold, file) for the run and each `fold<K>/` sub-run; JSONL preferred over CSV."""
    top = RunDir(run)
    found = []
    for fold, sub in [(None, top), *top.folds().items()]:
        present = [path for path in (sub.metrics_jsonl, sub.metrics_csv) if path.is_file()]
        if present:
            found.append((fold, present[0]))
    return found


def load_curves(runs: Sequence[str | Path]) -> dict[int | None, list[dict]]:
    """Metrics rows per fold; the fold comes from the rows, else from the `fold<K>` folder name."""
    curves: dict[int | None, list[dict]] = {}
    for run in runs:
        for dir_fold, path in metrics_files(run):
            for row in read_metrics(path):
                fold = row.get("fold")
                fold = int(fold) if fold is not None else dir_fold
                curves.setdefault(fold, []).append(row)
    return curves


def _series(rows: list[dict], split: str, key: str) -> tuple[list[float], list[float]]:
    """Per-epoch values of `key` for one split (the last row of each epoch wins)."""
    by_epoch: dict[float, float] = {}
    for r in rows:
        if r.get("split") == split and r.get(key) is not None:
            x = r.get("epoch")
            if x is None:
                x = r.get("step")
            if x is not None:
                by_epoch[x] = r[key]
    xs = sorted(by_epoch)
    return xs, [by_epoch[x] for x in xs]


def render(runs: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
           dataset: str | None = None) -> dict[str, Path]:
    """Draw the report of one run (or several runs merged by fold) into `out_dir`."""
    from . import report_html
    from .report_data import gather

    runs = [Path(r) for r in runs]
    out = Path(out_dir)
    curves = load_curves(runs)
    has_predictions = any(folds.prediction_files(r) for r in runs)
    table = folds.build_table(folds.collect(runs), dataset) if has_predictions else None
    if not curves and table is None:
        raise FileNotFoundError(
            f"{', '.join(map(str, runs))}: neither metrics ({' or '.join(METRICS_FILES)}) nor "
            f"{PREDICTIONS_FILE} found; is this a finetrain run directory?"
        )
    title = title or " + ".join(r.name for r in runs)
    data = gather(curves, runs)
    out.mkdir(parents=True, exist_ok=True)
    written = {"png": out / REPORT_PNG, "html": out / REPORT_HTML}
    _draw(written["png"], title, data, table)
    if table is not None:
        js, md = folds.write_table(out, table)
        written.update(json=js, markdown=md)
    rows = _table_rows(table) if table is not None else None
    written["html"].write_text(report_html.page(title, data, table, rows), encoding="utf-8")
    return written


def _warnings(data, table: dict | None) -> list[str]:
    random = data.header.get("random_weights") or (table and table.get("random_weights"))
    return [w for w, on in (("RANDOM WEIGHTS: plumbing, not a result", random),
                            ("PARTIAL: not every listed test clip scored", table and table.get("partial"))) if on]


def _draw(png: Path, title: str, data, table: dict | None) -> None:
    """The report's figure: header, loss / UAR / WAR curves (mean ± std over folds, selected epochs
    starred), per-class recall and confusion of the selected checkpoints, the fold table at the foot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 14), dpi=100, layout="constrained")
    grid = fig.add_gridspec(4, 3, height_ratios=[0.28, 1, 1.25, 0.4])
    warn = _warnings(data, table)
    fig.suptitle(f"finetrain report: {title}" + (f"\n{'; '.join(warn)}" if warn else ""), fontsize=14,
                 color="firebrick" if warn else "black")
    _plot_header(fig.add_subplot(grid[0, :]), data)
    _plot_loss(fig.add_subplot(grid[1, 0]), data)
    _plot_metric(fig.add_subplot(grid[1, 1]), data, "uar")
    _plot_metric(fig.add_subplot(grid[1, 2]), data, "war")
    _plot_recall(fig.add_subplot(grid[2, 0]), table)
    _plot_confusion(fig.add_subplot(grid[2, 1:]), table)
    _plot_fold_table(fig.add_subplot(grid[3, :]), table)
    fig.savefig(png)
    plt.close(fig)


def _plot_header(ax, data) -> None:
    ax.axis("off")
    h = data.header
    if not h:
        ax.text(0, 1, "no run.json: the store, streams and weights of this run are not recorded", va="top",
                ha="left", fontsize=10, transform=ax.transAxes)
        return
    lines = [f"store {h.get('store', '?')} ({h.get('dataset', '?')}, {h.get('store_frames', '?')} frames, "
             f"{h.get('size', '?')} px), mode {h.get('mode', '?')}",
             f"streams {', '.join(h.get('streams') or []) or '?'} (paper row: {h.get('paper_row') or 'none'})"
             + ("; dropped: " + ", ".join(h["streams_dropped"]) if h.get("streams_dropped") else ""),
             f"weights {h.get('weights', '?')}"]
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=10, family="monospace", transform=ax.transAxes)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _band(ax, b, label: str, colour: str, k: float = 1.0, style: str = "-") -> None:
    mean, std = np.asarray(b.mean) * k, np.asarray(b.std) * k
    ax.plot(b.epochs, mean, style, color=colour, marker=".",
            label=label + (f" (mean ± std, {b.folds} folds)" if b.folds > 1 else ""))
    if b.folds > 1:
        ax.fill_between(b.epochs, mean - std, mean + std, color=colour, alpha=0.2, lw=0)


def _plot_loss(ax, data) -> None:
    from .report_data import LOSS_PARTS

    for name, colour, style in (("train loss", "#4c72b0", "-"), ("val loss", "#dd8452", "-"),
                                *[(f"train {p}", c, ":") for p, c in zip(LOSS_PARTS, ("#55a868", "#c44e52",
                                                                                       "#8172b3"), strict=True)]):
        if name in data.curves:
            _band(ax, data.curves[name], name, colour, style=style)
    ax.set(title="loss (train, validation label terms, train parts)", xlabel="epoch", ylabel="loss")
    _integer_epochs(ax)
    _legend(ax, "no loss logged")


def _plot_metric(ax, data, key: str) -> None:
    name = f"val {key}"
    if name in data.curves:
        _band(ax, data.curves[name], f"validation {key.upper()}", "#dd8452", k=100.0)
    points = [(s["epoch"], 100 * s[key]) for s in data.selected.values() if s.get(key) is not None]
    if points:
        ax.scatter(*zip(*points, strict=True), marker="*", s=150, color="k", zorder=4, label="selected checkpoint")
    ax.set(title=f"validation {key.upper()}", xlabel="epoch", ylabel="%")
    _integer_epochs(ax)
    _legend(ax, "no validation metrics logged")


def _plot_confusion(ax, table: dict | None) -> None:
    """Test confusion pooled over folds; colour is the share of the true class's row."""
    if table is None:
        _empty(ax, "no test predictions yet")
        return
    labels = table["labels"]
    cm = np.sum([np.asarray(f["confusion"]) for f in table["folds"]], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, f"{v}", ha="center", va="center", fontsize=8, color="white" if norm[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(title=f"confusion of the selected checkpoint(s) (test, {len(table['folds'])} fold(s) pooled; "
                 "colour = row share)", xlabel="predicted", ylabel="true")


def _plot_recall(ax, table: dict | None) -> None:
    """Mean per-class test recall as bars, each labelled with its value (0 % included), UAR as a line."""
    if table is None:
        _empty(ax, "no test predictions yet")
        return
    labels = table["labels"]
    mean = [100 * (table["mean"]["per_class_recall"][n] or 0) for n in labels]
    y = np.arange(len(labels))
    ax.barh(y, mean, color="#4c72b0", alpha=0.8)
    for k, v in zip(y, mean, strict=True):
        ax.text(v + 1, k, f"{v:.2f}", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(xlim=(0, 110), title="per-class recall (test, mean over folds)", xlabel="%")
    ax.axvline(100 * (table["mean"]["uar"] or 0), color="k", ls=":", lw=1, label="UAR")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)


def _plot_fold_table(ax, table: dict | None) -> None:
    ax.axis("off")
    if table is None:
        return
    rows = _table_rows(table, short=True)
    tab = ax.table(cellText=rows[1:], colLabels=rows[0], loc="upper center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.scale(1, 1.3)
    ax.set_title("fold table (test, %)")


def _legend(ax, empty_text: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, empty_text)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _table_rows(table: dict, short: bool = False) -> list[list[str]]:
    """Header and rows of the fold table; `short` abbreviates long class names to fit a PNG cell."""
    labels = table["labels"]
    heads = [n if not short or len(n) <= 9 else n[:7] + "." for n in labels]
    rows = [["fold", "clips", "UAR", "WAR", *heads]]
    for f in table["folds"]:
        rows.append(["–" if f["fold"] is None else str(f["fold"]), folds.clips_cell(f), _pct(f["uar"]),
                     _pct(f["war"]), *[_pct(f["per_class_recall"][n]) for n in labels]])
    m = table["mean"]
    std = {k: "" if m[f"{k}_std"] is None or m["folds"] < 2 else f" ± {100 * m[f'{k}_std']:.2f}" for k in ("uar", "war")}
    rows.append(["mean (partial)" if table.get("partial") else "mean", str(sum(f["count"] for f in table["folds"])),
                 _pct(m["uar"]) + std["uar"], _pct(m["war"]) + std["war"],
                 *[_pct(m["per_class_recall"][n]) for n in labels]])
    return rows
