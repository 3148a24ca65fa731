"""Training curves through TensorBoard: the event files, read with TensorBoard's own reader, hold what
steps.jsonl and metrics.jsonl hold (tiny random-weight CLIP on the toy store: plumbing, not accuracy)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_store import write_toy_store  # noqa: E402

from finetrain.config import ConfigError, load_config  # noqa: E402
from finetrain.train.logger import make_logger  # noqa: E402
from finetrain.train.recipe import train  # noqa: E402


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_tensorboard_events_match_the_runs_own_logs(tmp_path):
    store = write_toy_store(tmp_path / "store", clips_per_class=3)
    run = tmp_path / "run"
    train(load_config("tiny", ["optim.epochs=2", "run.threads=1"]), store, run, progress=False)
    acc = _events(run / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    steps, metrics = _rows(run / "steps.jsonl"), _rows(run / "metrics.jsonl")
    for key in ("loss", "ce", "neg", "lr", "grad_norm", "clips_per_s"):
        got = [(e.step, e.value) for e in acc.Scalars(f"train/{key}")]
        assert got == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in steps], key
    val = [r for r in metrics if r["split"] == "val"]
    assert len(val) == 2
    for key in ("uar", "war", "loss"):
        assert [e.value for e in acc.Scalars(f"val/{key}")] == [pytest.approx(r[key], rel=1e-6) for r in val]
    assert [e.step for e in acc.Scalars("val/uar")] == [r["step"] for r in val]
    assert {t for t in tags if t.startswith("val/recall/")}  # per-class recall on validation
    assert "config" in "".join(acc.Tags()["tensors"])  # the resolved config as text
    test = json.loads((run / "test.json").read_text())  # hparams: the test scores beside the curves
    assert [e.value for e in acc.Scalars("test/uar")] == [pytest.approx(test["uar"], rel=1e-6)]
    assert [e.value for e in acc.Scalars("test/war")] == [pytest.approx(test["war"], rel=1e-6)]


def test_a_logger_that_cannot_run_is_refused_in_one_line(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match="run.logger=wandb needs the wandb package"):
        make_logger("wandb", tmp_path, True, {})
    with pytest.raises(ConfigError, match="run.logger must be one of"):
        make_logger("mlflow", tmp_path, True, {})
    assert not (tmp_path / "tensorboard").exists()
    make_logger("tensorboard", tmp_path, main=False, config={}).close()  # ranks > 0 write nothing
    assert not (tmp_path / "tensorboard").exists()
