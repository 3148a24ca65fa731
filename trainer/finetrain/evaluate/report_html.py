"""The report's interactive page: plotly figures (hover values, zoom) with plotly's script embedded, so the
file opens with no network; a header saying what the run was, and the fold table.

It draws the same `report_data.ReportData` and fold table as the PNG.
"""

from __future__ import annotations

import html

import numpy as np

from ..score import folds
from .report_data import LOSS_PARTS, Band, ReportData

COLOURS = {"train": "#4c72b0", "val": "#dd8452", "ce": "#55a868", "neg": "#c44e52", "desc": "#8172b3"}


def _band_traces(go, b: Band, name: str, colour: str, percent: bool = False, dash: str | None = None) -> list:
    k = 100.0 if percent else 1.0
    mean = [k * v for v in b.mean]
    lo = [k * (m - s) for m, s in zip(b.mean, b.std, strict=True)]
    hi = [k * (m + s) for m, s in zip(b.mean, b.std, strict=True)]
    label = name + (f" (mean ± std of {b.folds} folds)" if b.folds > 1 else "")
    traces = [go.Scatter(x=b.epochs, y=mean, name=label, mode="lines+markers", line={"color": colour, "dash": dash},
                         legendgroup=name)]
    if b.folds > 1:
        traces.append(go.Scatter(x=[*b.epochs, *b.epochs[::-1]], y=[*hi, *lo[::-1]], fill="toself", showlegend=False,
                                 line={"width": 0}, fillcolor=colour, opacity=0.2, hoverinfo="skip", legendgroup=name))
    return traces


def _selected_traces(go, data: ReportData, key: str, percent: bool) -> list:
    points = [(f, s) for f, s in data.selected.items() if s.get(key) is not None]
    if not points:
        return []
    k = 100.0 if percent else 1.0
    return [go.Scatter(x=[s["epoch"] for _, s in points], y=[k * s[key] for _, s in points], mode="markers",
                       marker={"symbol": "star", "size": 13, "color": "black"}, name="selected checkpoint",
                       text=[f"fold {f}" for f, _ in points], showlegend=key == "uar", legendgroup="selected")]


def curves_figure(data: ReportData):
    """Loss (train, validation and the loss parts), validation UAR, validation WAR: three panels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "validation UAR (%)", "validation WAR (%)"))
    for name, colour, dash in (("train loss", COLOURS["train"], None), ("val loss", COLOURS["val"], None),
                               *[(f"train {p}", COLOURS[p], "dot") for p in LOSS_PARTS]):
        if name in data.curves:
            for t in _band_traces(go, data.curves[name], name, colour, dash=dash):
                fig.add_trace(t, row=1, col=1)
    for col, key in ((2, "uar"), (3, "war")):
        if f"val {key}" in data.curves:
            for t in _band_traces(go, data.curves[f"val {key}"], f"val {key.upper()}", COLOURS["val"], percent=True):
                fig.add_trace(t, row=1, col=col)
        for t in _selected_traces(go, data, key, percent=True):
            fig.add_trace(t, row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=420, margin={"t": 40, "b": 40}, hovermode="x unified")
    return fig


def recall_confusion_figure(table: dict):
    """Per-class recall (mean over folds, every class labelled even at 0 %) and the pooled confusion matrix
    of the selected checkpoints' test predictions."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = table["labels"]
    recall = [100 * (table["mean"]["per_class_recall"][n] or 0.0) for n in labels]
    cm = np.sum([np.asarray(f["confusion"]) for f in table["folds"]], axis=0)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6],
                        subplot_titles=("per-class recall, test (%)", "confusion, test, folds pooled (row share)"))
    fig.add_trace(go.Bar(x=recall, y=labels, orientation="h", text=[f"{r:.2f}" for r in recall],
                         textposition="outside", marker={"color": COLOURS["train"]}, name="recall"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=share, x=labels, y=labels, text=cm, texttemplate="%{text}", colorscale="Blues",
                             zmin=0, zmax=1, hovertemplate="true %{y}<br>predicted %{x}<br>%{text} clips<extra></extra>"),
                  row=1, col=2)
    fig.update_xaxes(range=[0, 110], row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(360, 40 * len(labels)), showlegend=False, margin={"t": 40})
    return fig


def _header_html(data: ReportData, table: dict | None) -> list[str]:
    h = data.header
    parts = []
    if h.get("random_weights") or (table and table.get("random_weights")):
        parts.append("<p class='warn'>Random CLIP weights (model.pretrained: null): these numbers check the "
                     "plumbing, they are not a result.</p>")
    if table and table.get("partial"):
        parts.append("<p class='warn'>Partial: not every listed test clip was scored (see the clips column).</p>")
    rows = [("store", h.get("store")), ("dataset", h.get("dataset")), ("mode", h.get("mode")),
            ("streams", ", ".join(h.get("streams") or []) or None), ("paper row", h.get("paper_row")),
            ("streams dropped", "; ".join(f"{k}: {v}" for k, v in (h.get("streams_dropped") or {}).items()) or None),
            ("weights", h.get("weights")), ("store frames, size", f"{h.get('store_frames')}, {h.get('size')}"
                                           if h.get("size") else None)]
    parts.append("<table class='head'>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                                                  for k, v in rows if v is not None) + "</table>")
    return parts


def page(title: str, data: ReportData, table: dict | None, rows: list[list[str]] | None) -> str:
    """The whole HTML page; plotly's script is embedded once, in the first figure."""
    figures = [curves_figure(data)] + ([recall_confusion_figure(table)] if table is not None else [])
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>finetrain report: {html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}table.head td,"
             "table.head th{text-align:left}.warn{background:#fdd;padding:0.5em;font-weight:bold}</style>",
             "</head><body>", f"<h1>finetrain report: {html.escape(title)}</h1>", *_header_html(data, table)]
    if table is not None and rows is not None:
        m = table["mean"]
        parts.append(f"<p>Mean over {m['folds']} fold(s): <b>UAR {folds.pct_cell(m['uar'])}</b>, <b>WAR "
                     f"{folds.pct_cell(m['war'])}</b> (test, %){' <b>partial</b>' if table.get('partial') else ''}.</p>")
        for line in folds.coverage_lines(table):
            parts.append(f"<p>{html.escape(line)}</p>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
        parts.append("</table>")
    else:
        parts.append("<p>No test predictions yet: curves only.</p>")
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False}))
    if data.config_text:
        parts.append(f"<details><summary>config</summary><pre>{html.escape(data.config_text)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
