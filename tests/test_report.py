"""`finetrain report` renders a PNG and a self-contained HTML page from a run's files alone."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from fineschema import labels
from finetrain.cli import app
from finetrain.evaluate import report
from finetrain.score.predictions import Predictions, write_predictions


def _fake_run(root, fold_ids, metrics_format="jsonl"):
    """A run directory as the trainer leaves it: per-fold metrics and test predictions (numbers made up)."""
    run = root / "run"
    rng = np.random.default_rng(0)
    for k in fold_ids:
        d = run / f"fold{k}"
        d.mkdir(parents=True)
        rows = []
        for e in range(4):
            rows.append({"run": "run", "fold": k, "epoch": e, "step": 10 * e, "split": "train",
                         "loss": 2.0 - 0.3 * e, "uar": None, "war": None, "lr": 1e-3, "seconds": 1.0})
            rows.append({"run": "run", "fold": k, "epoch": e, "step": 10 * e, "split": "val",
                         "loss": 2.1 - 0.25 * e, "uar": 0.2 + 0.1 * e, "war": 0.3 + 0.1 * e, "lr": None,
                         "seconds": 0.5})
        if metrics_format == "jsonl":
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            head = list(rows[0])
            lines = [",".join(head)] + [",".join("" if r[h] is None else str(r[h]) for h in head) for r in rows]
            (d / "metrics.csv").write_text("\n".join(lines) + "\n")
        y = rng.integers(0, 7, 30)
        p = rng.random((30, 7))
        p[np.arange(30), y] += 1.0
        p /= p.sum(1, keepdims=True)
        (d / "test.json").write_text(json.dumps({"fold": k, "epoch": 2, "selected": "best"}))  # the tested epoch
        write_predictions(d / "predictions.parquet",
                          Predictions.from_probs(labels.BASIC7, [f"{k}-{i}" for i in range(30)], p,
                                                 [labels.BASIC7[i] for i in y], k))
    return run


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_metrics_readers_agree(tmp_path, fmt):
    run = _fake_run(tmp_path, [1], fmt)
    curves = report.load_curves([run])
    assert list(curves) == [1]
    xs, ys = report._series(curves[1], "val", "uar")
    assert xs == [0, 1, 2, 3] and ys == pytest.approx([0.2, 0.3, 0.4, 0.5])


def test_report_renders(tmp_path):
    run = _fake_run(tmp_path, [1, 2])
    result = CliRunner().invoke(app, ["report", "--run", str(run), "--dataset", "dfew"])
    assert result.exit_code == 0, result.output
    out = run / "report"
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    page = (out / "report.html").read_text()
    # self-contained: plotly's script is embedded once, nothing is fetched from elsewhere
    assert page.count("* plotly.js v") == 1  # the library, once
    assert not re.search(r"""<script[^>]+src=|<link[^>]+href=["']?https?:""", page)
    for panel in ("loss", "validation UAR (%)", "validation WAR (%)", "per-class recall, test (%)",
                  "confusion, test, folds pooled"):
        assert panel in page
    assert "std of 2 folds" in page and "selected checkpoint" in page
    table = json.loads((out / "fold_table.json").read_text())
    assert [f["fold"] for f in table["folds"]] == [1, 2]
    assert f"UAR {100 * table['mean']['uar']:.2f}" in page
    assert table["missing_folds"] == [3, 4, 5]
    assert "fold_table.md" in result.output


def test_report_merge_and_errors(tmp_path):
    a = _fake_run(tmp_path / "a", [1])
    b = _fake_run(tmp_path / "b", [2])
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["report", "--merge", str(a), str(b), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "fold_table.json").read_text())
    assert [f["fold"] for f in table["folds"]] == [1, 2]
    (tmp_path / "nothing").mkdir()
    result = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and "is this a finetrain run directory" in result.output


def test_damaged_metrics_and_duplicate_folds_fail_in_one_line(tmp_path):
    run = _fake_run(tmp_path / "a", [1])
    with (run / "fold1" / "metrics.jsonl").open("a") as fh:
        fh.write("{not json\n")
    result = CliRunner().invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {run / 'fold1' / 'metrics.jsonl'}:9: not a JSON line"]
    # only fold<K> folders are sub-runs: a stray `fold_notes/` with metrics is not read
    notes = _fake_run(tmp_path / "b", [2])
    (notes / "fold2").rename(notes / "fold_notes")
    assert report.metrics_files(notes) == []


def test_merging_runs_that_both_hold_a_fold_fails_in_one_line(tmp_path):
    a = _fake_run(tmp_path / "a", [1])
    b = _fake_run(tmp_path / "b", [1])
    result = CliRunner().invoke(app, ["report", "--merge", str(a), str(b), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fold 1 appears in both" in lines[0]
    assert not (tmp_path / "merged").exists()


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine (Debian package chromium)")
def test_report_page_draws_its_plots_in_headless_chromium_without_network(tmp_path):
    """The embedded plotly script runs offline: the DOM after load holds the drawn SVG plots."""
    import subprocess

    run = _fake_run(tmp_path, [1, 2])
    assert CliRunner().invoke(app, ["report", "--run", str(run)]).exit_code == 0
    page = run / "report" / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom"]
    dom = subprocess.run([_chromium(), *flags, page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="main-svg"') >= 4  # two figures, each drawn as SVG layers by plotly.js
    assert "validation UAR (%)" in dom and "confusion, test, folds pooled" in dom
