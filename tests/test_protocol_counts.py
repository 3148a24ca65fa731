"""A reported number is the protocol's number: every listed test clip is scored unless it cannot be read,
the counts say how many were listed, scored and why the rest were not, and a fold that lost clips is
marked partial wherever its numbers are shown.

The store is made by the real pipeline from a `fineprep synth` DFEW dataset (clip_224x224 face-crop
folders) in which three of fold 1's test clips were broken on purpose: one clip's frames are black, one
holds noise instead of a face, one folder is deleted. The model is the tiny CLIP with random weights
(plumbing and counts, not accuracy).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fineschema import tables

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _cli(tool: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _fold1_test_ids(root: Path) -> list[str]:
    with open(root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv", newline="") as fh:
        return [row[0].zfill(5) for row in csv.reader(fh) if row and row[0].isdigit()]  # folders are 00001


def _overwrite_frames(folder: Path, make) -> None:
    for k, jpg in enumerate(sorted(folder.glob("*.jpg"))):
        cv2.imwrite(str(jpg), make(k))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """(store, {kind: clip id}): a DFEW store where fold 1's test set has a black clip, a faceless clip
    and a missing one."""
    from fineprep.synth import make_dataset

    base = tmp_path_factory.mktemp("protocol")
    root = make_dataset("dfew", base / "data", clips_per_class=3, seed=0, size=64, frames_range=(4, 5))
    black, noise, gone = _fold1_test_ids(root)[:3]
    clips = root / "Clip" / "clip_224x224"
    rng = np.random.default_rng(0)
    _overwrite_frames(clips / black, lambda k: np.zeros((64, 64, 3), np.uint8))
    _overwrite_frames(clips / noise, lambda k: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    shutil.rmtree(clips / gone)
    store = base / "store"
    proc = _cli("fineprep", "extract", "--dataset", "dfew", "--root", root, "--out", store, "--frames", "4",
                "--size", "64", "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, store, {"black": black, "noise": noise, "missing": gone}


@pytest.mark.slow
def test_faceless_clips_are_stored_and_unreadable_ones_are_counted(broken):
    import pyarrow.parquet as pq

    _, store, ids = broken
    m = {r["clip_id"]: r for r in pq.read_table(store / "manifest.parquet").to_pylist()}
    for kind in ("black", "noise"):
        row = m[ids[kind]]
        assert row["status"] == tables.STATUS_NO_FACE and row["store_index"] >= 0, row
        assert row["frames_input"] == tables.INPUT_SOURCE_FRAMES
    assert m[ids["missing"]]["status"] == tables.STATUS_MISSING and m[ids["missing"]]["store_index"] == -1


@pytest.mark.slow
def test_every_listed_test_clip_is_scored_but_the_unreadable_one_and_the_fold_says_partial(broken):
    base, store, ids = broken
    run = base / "run"
    proc = _cli("finetrain", "run", "--store", store, "--config", "tiny", "--out", run, "--fold", "1", "--quiet",
                "optim.epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((run / "test.json").read_text())
    listed = len(_fold1_test_ids(base / "data"))
    assert test["clips"]["listed"] == listed and test["clips"]["scored"] == listed - 1 == test["count"]
    assert test["clips"]["unscored"] == {"missing": 1}
    assert test["clips"]["scored_without_face"] == {"no_face": 2}
    assert test["partial"] is True and test["random_weights"] is True
    scored = {r["clip_id"] for r in _predictions(run)}
    assert ids["black"] in scored and ids["noise"] in scored and ids["missing"] not in scored
    info = json.loads((run / "run.json").read_text())
    assert info["clips"]["test"] == test["clips"] and info["clips"]["train"]["unscored"] == {}
    assert info["clips"]["train"]["scored"] == info["clips"]["train"]["listed"]
    assert f"{listed - 1} of {listed} listed test clips scored (partial: 1 missing)" in " ".join(proc.stderr.split())
    assert "UAR " in proc.stderr and "%" in proc.stderr  # percent for people, fractions in JSON
    assert 0.0 <= test["uar"] <= 1.0

    report = _cli("finetrain", "report", "--run", run)
    assert report.returncode == 0, report.stderr[-2000:]
    table = json.loads((run / "report" / "fold_table.json").read_text())
    assert table["partial"] is True and table["folds"][0]["clips"]["unscored"] == {"missing": 1}
    md = (run / "report" / "fold_table.md").read_text()
    assert f"{listed - 1} of {listed} (partial: 1 missing)" in md and "**mean** (partial)" in md
    page = (run / "report" / "report.html").read_text()
    assert "partial" in page and "Random CLIP weights" in page


@pytest.mark.slow
def test_strict_protocol_refuses_the_partial_fold_before_training(broken):
    base, store, _ = broken
    out = base / "strict"
    proc = _cli("finetrain", "run", "--store", store, "--config", "tiny", "--out", out, "--fold", "1", "--quiet",
                "--strict-protocol")
    assert proc.returncode == 2
    assert "run.strict_protocol refuses a fold" in proc.stderr and "1 missing" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 or "error:" in proc.stderr.splitlines()[0]
    assert not (out / "checkpoints").exists()


def _predictions(run: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(run / "predictions.parquet").to_pylist()
