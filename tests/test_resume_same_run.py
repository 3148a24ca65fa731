"""`--resume` continues the run in the folder or refuses in one line: another fold, another store, a changed
setting (also on a finished run), a tampered state.json. Operational keys (run.max_steps, ...) may change,
and the change is recorded in run.json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from toy_store import write_toy_store  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from finetrain.cli import app as finetrain_app  # noqa: E402
from finetrain.config import load_config  # noqa: E402
from finetrain.data.store import StoreInfo  # noqa: E402
from finetrain.runinfo import FINGERPRINT_KEY, store_fingerprint  # noqa: E402
from finetrain.train.recipe import train  # noqa: E402
from finetrain.train.state_schema import StateError, checked_state  # noqa: E402

COMMON = ["optim.epochs=2", "optim.batch_size=4", "run.threads=1", "data.num_workers=0"]
runner = CliRunner()


# ------------------------------------------------------------------------------- fast, no training
GOOD = {"epoch": 1, "step": 3, "batch_in_epoch": 2, "best": 0.5, "best_epoch": 1, "done": False,
        "scheduler": {"last_epoch": 3, "base_lrs": [0.001]}, "param_groups": [{"lr": 0.001}]}


@pytest.mark.parametrize("key,value", [("epoch", "abc"), ("epoch", -100), ("epoch", 1e30), ("epoch", True),
                                       ("batch_in_epoch", -7), ("step", 2 ** 70), ("best", float("nan")),
                                       ("done", "yes"), ("best_epoch", 99), ("scheduler", {"last_epoch": 9}),
                                       ("param_groups", [{"lr": 1e30}])])
def test_a_tampered_state_is_refused_in_one_line(key, value):
    checked_state(dict(GOOD), "state.json", epochs=2, batches=6, total_steps=12)  # the untampered one passes
    with pytest.raises(StateError) as exc:
        checked_state({**GOOD, key: value}, "RUN/state.json", epochs=2, batches=6, total_steps=12)
    assert "RUN/state.json" in str(exc.value) and key.split(".")[0] in str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_store_fingerprint_follows_clips_and_settings_not_the_path(tmp_path):
    a = write_toy_store(tmp_path / "a", clips_per_class=2)
    moved = shutil.copytree(a, tmp_path / "moved")
    other = write_toy_store(tmp_path / "b", clips_per_class=3)
    bigger = write_toy_store(tmp_path / "c", clips_per_class=2, size=48)
    fa = store_fingerprint(StoreInfo.open(a))
    assert fa == store_fingerprint(StoreInfo.open(moved))
    assert fa != store_fingerprint(StoreInfo.open(other)) and fa != store_fingerprint(StoreInfo.open(bigger))


# ------------------------------------------------------------------------------- one stopped run
@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A fold-1 run stopped after 2 optimiser steps (its checkpoint is there), and its store."""
    root = tmp_path_factory.mktemp("resume")
    store = write_toy_store(root / "store", clips_per_class=4, frames=4, size=32, folds=2)
    run = root / "run"
    train(load_config("tiny", COMMON + ["run.max_steps=2"]), store, run, progress=False)
    return store, run


def _copy(stopped, tmp_path) -> Path:
    return Path(shutil.copytree(stopped[1], tmp_path / "run"))


def _one_line_refusal(r, *words):
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and text.count("error:") == 1, r.output
    for w in words:
        assert w in text, (w, text)


def _resume(store, run, *args):
    return runner.invoke(finetrain_app, ["run", "--store", str(store), "--out", str(run), "--resume", "--quiet",
                                         *args])


@pytest.mark.slow
def test_resume_on_another_fold_is_refused_and_changes_nothing(stopped, tmp_path):
    store, _ = stopped
    run = _copy(stopped, tmp_path)
    before = {p.name: p.read_bytes() for p in (run / "config.yaml", run / "run.json")}
    r = _resume(store, run, "--fold", "2")
    _one_line_refusal(r, "fold 2", "trains fold 1")
    assert {p.name: p.read_bytes() for p in (run / "config.yaml", run / "run.json")} == before
    assert not (run / "test.json").exists()


@pytest.mark.slow
def test_resume_on_another_store_is_refused(stopped, tmp_path):
    store, _ = stopped
    run = _copy(stopped, tmp_path)
    other = write_toy_store(tmp_path / "other", clips_per_class=5, frames=4, size=48, folds=2)
    recorded = json.loads((run / "run.json").read_text())
    assert recorded[FINGERPRINT_KEY] == store_fingerprint(StoreInfo.open(store))
    r = _resume(other, run)
    _one_line_refusal(r, "another store", "fingerprint")
    assert json.loads((run / "run.json").read_text()) == recorded


@pytest.mark.slow
def test_resume_with_a_changed_setting_is_refused(stopped, tmp_path):
    store, _ = stopped
    run = _copy(stopped, tmp_path)
    r = _resume(store, run, "optim.lr=50")
    _one_line_refusal(r, "optim.lr", "from 0.003 to 50")
    assert "lr: 50" not in (run / "config.yaml").read_text()
    r = _resume(store, run, "model.streams=[frames]")
    _one_line_refusal(r, "streams")


@pytest.mark.slow
def test_a_tampered_state_json_is_refused_by_resume(stopped, tmp_path):
    store, _ = stopped
    run = _copy(stopped, tmp_path)
    path = run / "checkpoints" / "last" / "state.json"
    state = json.loads(path.read_text())
    for key, value in (("epoch", "abc"), ("batch_in_epoch", -7), ("step", 2 ** 70), ("epoch", 1e30)):
        path.write_text(json.dumps({**state, key: value}))
        r = _resume(store, run)
        _one_line_refusal(r, str(path), key)
        assert not (run / "test.json").exists()


@pytest.mark.slow
def test_resume_may_change_where_it_stops_and_records_it_then_a_finished_run_refuses_overrides(stopped, tmp_path):
    store, _ = stopped
    run = _copy(stopped, tmp_path)
    r = _resume(store, run, "run.max_steps=0")
    assert r.exit_code == 0, r.output
    assert (run / "test.json").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["resumed_with"] == [{"run.max_steps": 0}]
    test = (run / "test.json").read_bytes()
    r = _resume(store, run, "optim.lr=1e-2")  # a finished run: never silently ignored
    _one_line_refusal(r, "optim.lr")
    assert (run / "test.json").read_bytes() == test
