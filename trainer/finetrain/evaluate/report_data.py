"""What a report draws, read from a run's files alone: per-epoch curves summarised across folds (mean and
standard deviation), the loss parts per epoch, each fold's selected epoch, and the header (store,
streams, paper row, weights, clips, the resolved config).

`report` draws these as a PNG (matplotlib) and `report_html` as an interactive page (plotly); both read
the same `ReportData`, so the two never disagree.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..rundir import RunDir

LOSS_PARTS = ("ce", "neg", "desc")


@dataclass
class Band:
    """One curve over epochs: the mean across folds and its standard deviation (0 with one fold)."""

    epochs: list[float]
    mean: list[float]
    std: list[float]
    folds: int


@dataclass
class ReportData:
    curves: dict[str, Band] = field(default_factory=dict)     # "train loss", "val loss", "val uar", "val war", parts
    selected: dict[int | None, dict] = field(default_factory=dict)  # fold -> {"epoch", "uar", "war"} on validation
    header: dict = field(default_factory=dict)
    config_text: str = ""


def band(series: list[dict[float, float]]) -> Band | None:
    """Mean and std across folds per epoch (epochs that some fold reached)."""
    epochs = sorted({x for s in series for x in s})
    if not epochs:
        return None
    mean, std = [], []
    for x in epochs:
        values = np.asarray([s[x] for s in series if x in s], dtype=float)
        mean.append(float(values.mean()))
        std.append(float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return Band(epochs, mean, std, len(series))


def _per_epoch(rows: list[dict], split: str, key: str) -> dict[float, float]:
    out = {}
    for r in rows:
        if r.get("split") == split and r.get(key) is not None and r.get("epoch") is not None:
            out[float(r["epoch"])] = float(r[key])
    return out


def loss_parts(run: Path) -> dict[str, dict[float, float]]:
    """part -> epoch (1-based, as metrics rows count) -> mean of that part over the epoch's steps."""
    path = RunDir(run).steps
    sums: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            for part in LOSS_PARTS:
                if isinstance(row, dict) and isinstance(row.get(part), (int, float)):
                    sums[part][float(row.get("epoch", 0)) + 1].append(float(row[part]))
    return {p: {e: float(np.mean(v)) for e, v in by.items()} for p, by in sums.items()}


def fold_dirs(runs) -> dict[int | None, Path]:
    """fold -> the folder holding that fold's files (a run, or its fold<K>/ sub-run)."""
    out: dict[int | None, Path] = {}
    for run in runs:
        top = RunDir(run)
        subs = top.folds()
        if subs:
            out.update({k: sub.root for k, sub in subs.items()})
        else:
            out[_fold_of(top)] = top.root
    return out


def _fold_of(run: RunDir):
    try:
        return json.loads(run.test_json.read_text()).get("fold") if run.test_json.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def gather(curves: dict, runs) -> ReportData:
    """The report's data from the metrics rows per fold (`report.load_curves`) and the runs' folders."""
    data = ReportData()
    for name, split, key in (("train loss", "train", "loss"), ("val loss", "val", "loss"),
                             ("val uar", "val", "uar"), ("val war", "val", "war")):
        b = band([_per_epoch(rows, split, key) for rows in curves.values()])
        if b is not None:
            data.curves[name] = b
    dirs = fold_dirs(runs)
    for part in LOSS_PARTS:
        b = band([p[part] for p in (loss_parts(d) for d in dirs.values()) if part in p])
        if b is not None:
            data.curves[f"train {part}"] = b
    for fold, rows in curves.items():
        chosen = _selected(dirs.get(fold), rows)
        if chosen:
            data.selected[fold] = chosen
    data.header, data.config_text = header(runs)
    return data


def _selected(folder: Path | None, rows: list[dict]) -> dict | None:
    """The epoch whose checkpoint was tested (test.json) and its validation scores."""
    if folder is None or not RunDir(folder).test_json.is_file():
        return None
    try:
        epoch = json.loads(RunDir(folder).test_json.read_text()).get("epoch")
    except (OSError, json.JSONDecodeError):
        return None
    if epoch is None:
        return None
    val = {k: _per_epoch(rows, "val", k).get(float(epoch)) for k in ("uar", "war", "loss")}
    return {"epoch": float(epoch), **val}


def header(runs) -> tuple[dict, str]:
    """What the run was: store, dataset, streams and paper row, weights, clips; and its config as YAML."""
    top = RunDir(runs[0])
    sub = next(iter(top.folds().values()), None)
    info: dict = {}
    for where in (top, sub):
        if where is not None and where.run_info.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                info.update(json.loads(where.run_info.read_text()))
    config = next((d.config for d in (top, sub) if d is not None and d.config.is_file()), None)
    keys = ("store", "dataset", "mode", "streams", "streams_dropped", "paper_row", "weights", "random_weights",
            "random_descriptions", "store_frames", "size")
    return {k: info[k] for k in keys if k in info}, config.read_text(encoding="utf-8") if config else ""
