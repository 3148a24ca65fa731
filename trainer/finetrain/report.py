"""A run's report: one PNG and one self-contained HTML page, rendered from the run's files only.

Inputs: the per-epoch metrics the trainer writes (`metrics.jsonl`, or `metrics.csv`, with the
columns of `fineschema.tables.METRICS`) and the per-clip test predictions (`predictions.parquet`),
in the run directory or its `fold<K>/` sub-runs. Nothing is re-evaluated; a report can be drawn on
a machine without the model or the store.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import folds
from .errors import FinetrainError
from .rundir import METRICS_CSV, METRICS_JSONL, PREDICTIONS_FILE, RunDir

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


def _fold_name(fold) -> str:
    return "run" if fold is None else f"fold {fold}"


def render(runs: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
           dataset: str | None = None) -> dict[str, Path]:
    """Draw the report of one run (or several runs merged by fold) into `out_dir`."""
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
    out.mkdir(parents=True, exist_ok=True)
    written = {"png": out / REPORT_PNG, "html": out / REPORT_HTML}
    _draw(written["png"], title, curves, table)
    if table is not None:
        js, md = folds.write_table(out, table)
        written.update(json=js, markdown=md)
    written["html"].write_text(_html(title, written["png"], table, runs))
    return written


def _draw(png: Path, title: str, curves: dict[int | None, list[dict]], table: dict | None) -> None:
    """The report's figure: curves on top, test confusion and recall below, the fold table at the foot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 13), dpi=100, layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1.25, 0.4])
    warn = [w for w, on in (("RANDOM WEIGHTS: plumbing, not a result", table and table.get("random_weights")),
                             ("PARTIAL: not every listed test clip scored", table and table.get("partial"))) if on]
    fig.suptitle(f"finetrain report: {title}" + (f"\n{'; '.join(warn)}" if warn else ""), fontsize=14,
                 color="firebrick" if warn else "black")
    colors = plt.get_cmap("tab10")
    ordered = sorted(curves.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    _plot_loss(fig.add_subplot(grid[0, 0]), ordered, colors)
    _plot_validation(fig.add_subplot(grid[0, 1]), ordered, colors)
    _plot_confusion(fig.add_subplot(grid[1, 0]), table)
    _plot_recall(fig.add_subplot(grid[1, 1]), table, colors)
    _plot_fold_table(fig.add_subplot(grid[2, :]), table)
    fig.savefig(png)
    plt.close(fig)


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _plot_loss(ax, curves: list[tuple[int | None, list[dict]]], colors) -> None:
    for i, (fold, rows) in enumerate(curves):
        for split, style in (("train", "-"), ("val", "--")):
            xs, ys = _series(rows, split, "loss")
            if xs:
                ax.plot(xs, ys, style, color=colors(i % 10), marker=".", label=f"{_fold_name(fold)} {split}")
    ax.set(title="loss", xlabel="epoch", ylabel="loss")
    _integer_epochs(ax)
    _legend(ax, "no loss logged")


def _plot_validation(ax, curves: list[tuple[int | None, list[dict]]], colors) -> None:
    for i, (fold, rows) in enumerate(curves):
        for key, style in (("uar", "-"), ("war", ":")):
            xs, ys = _series(rows, "val", key)
            if xs:
                ax.plot(xs, [100 * y for y in ys], style, color=colors(i % 10), marker=".",
                        label=f"{_fold_name(fold)} val {key.upper()}")
    ax.set(title="validation UAR / WAR", xlabel="epoch", ylabel="%")
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
    ax.set(title=f"confusion (test, {len(table['folds'])} fold(s) pooled; colour = row share)",
           xlabel="predicted", ylabel="true")


def _plot_recall(ax, table: dict | None, colors) -> None:
    """Mean per-class test recall as bars, each fold's as dots, UAR as a line."""
    if table is None:
        _empty(ax, "no test predictions yet")
        return
    labels = table["labels"]
    mean = [table["mean"]["per_class_recall"][n] for n in labels]
    y = np.arange(len(labels))
    ax.barh(y, [100 * (m or 0) for m in mean], color="#4c72b0", alpha=0.8, label="mean over folds")
    if len(table["folds"]) > 1:
        for i, f in enumerate(table["folds"]):
            vals = [f["per_class_recall"][n] for n in labels]
            ax.scatter([100 * v for v in vals if v is not None],
                       [k for k, v in zip(y, vals, strict=True) if v is not None],
                       color=colors(i % 10), s=14, zorder=3, label=_fold_name(f["fold"]))
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), title="per-class recall (test)", xlabel="%")
    ax.axvline(100 * (table["mean"]["uar"] or 0), color="k", ls=":", lw=1, label="UAR")
    ax.legend(fontsize=7, loc="best", framealpha=0.9)


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
    rows.append(["mean (partial)" if table.get("partial") else "mean", str(sum(f["count"] for f in table["folds"])),
                 _pct(m["uar"]), _pct(m["war"]),
                 *[_pct(m["per_class_recall"][n]) for n in labels]])
    return rows


def _html(title: str, png: Path, table: dict | None, runs: Sequence[Path]) -> str:
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>finetrain report: {html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}tr:last-child{font-weight:bold}img{max-width:100%}</style></head><body>",
        f"<h1>finetrain report: {html.escape(title)}</h1>",
        "<p>Runs: " + ", ".join(f"<code>{html.escape(str(r))}</code>" for r in runs) + "</p>",
    ]
    if table is not None:
        m = table["mean"]
        if table.get("random_weights"):
            parts.append("<p style='background:#fdd;padding:0.5em;font-weight:bold'>Random CLIP weights "
                         "(model.pretrained: null): these numbers check the plumbing, they are not a result.</p>")
        parts.append(f"<p>Mean over {m['folds']} fold(s): <b>UAR {_pct(m['uar'])}</b>, "
                     f"<b>WAR {_pct(m['war'])}</b> (test, %)"
                     + (" <b>partial</b>" if table.get("partial") else "") + ".</p>")
        for line in folds.coverage_lines(table):
            if not line.startswith("Random"):
                parts.append(f"<p>{html.escape(line)}</p>")
        if table.get("missing_folds"):
            parts.append(f"<p><b>Incomplete:</b> folds {table['missing_folds']} of {table['expected_folds']} "
                         "have no results yet.</p>")
        rows = _table_rows(table)
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
        for row in rows[1:]:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No test predictions yet: curves only.</p>")
    parts.append(f"<p><img alt='report' src='data:image/png;base64,{image}'></p></body></html>")
    return "\n".join(parts)
