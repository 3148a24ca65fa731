"""A killed training run resumes to the result of a run that was never killed: the logs hold each step and
epoch once, a kill between the two renames of `checkpoint.save` leaves the previous checkpoint to resume
from, and a real SIGKILL of `finetrain run` at chosen moments changes nothing in test.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from toy_store import write_toy_store  # noqa: E402

from finetrain.config import load_config  # noqa: E402
from finetrain.train import checkpoint as ckpt  # noqa: E402
from finetrain.train.recipe import METRICS_CSV, METRICS_JSONL, STEPS_JSONL, TEST_JSON, train, trim_logs  # noqa: E402

BIN = Path(sys.executable).parent
# 3 epochs of 3 optimiser steps (42 clips; fold 1 trains on 21, 4 of them held out for validation), batches
# of 4, a checkpoint after every step
COMMON = ["optim.epochs=3", "optim.batch_size=4", "run.threads=1", "run.checkpoint_every=1"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ------------------------------------------------------------------------------- fast, no training
def test_trim_logs_keeps_rows_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    steps = [{"step": s, "epoch": (s - 1) // 4, "loss": 1.0 / s} for s in range(1, 8)]
    (tmp_path / STEPS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in steps) + '{"step": 8, "ep')
    metrics = [{"epoch": e, "split": sp, "step": 4 * e, "loss": 0.5} for e in (1, 2) for sp in ("train", "val")]
    (tmp_path / METRICS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in metrics))
    trim_logs(tmp_path, step=4, epoch=1)
    assert [r["step"] for r in _rows(tmp_path / STEPS_JSONL)] == [1, 2, 3, 4]
    assert [(r["epoch"], r["split"]) for r in _rows(tmp_path / METRICS_JSONL)] == [(1, "train"), (1, "val")]
    csv_lines = (tmp_path / METRICS_CSV).read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("run,")
    assert not list(tmp_path.glob("*.tmp"))


def _save(folder: Path, value: float) -> None:
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ckpt.save(folder, net, "{}", ["a", "b"], {"epoch": 0, "step": int(value)}, opt)


def _weight(folder: Path) -> float:
    return float(ckpt.read_tensors(folder / ckpt.MODEL_FILE)["weight"][0, 0])


def test_recover_after_a_kill_between_the_renames_restores_the_previous_checkpoint(tmp_path):
    last = tmp_path / "last"
    _save(last, 1.0)
    _save(tmp_path / "newer", 2.0)
    # what save(last, ...) leaves when killed between its renames: the new one complete in last.tmp,
    # the live one moved to last.old, no last
    os.replace(tmp_path / "newer", tmp_path / "last.tmp")
    os.replace(last, tmp_path / "last.old")
    assert ckpt.recover(last) is True
    assert _weight(last) == 1.0 and ckpt.read_state(last)["step"] == 1
    assert not (tmp_path / "last.old").exists() and not (tmp_path / "last.tmp").exists()
    # a kill while the old folder was being removed: leftovers go, the checkpoint stays
    (tmp_path / "last.old").mkdir()
    (tmp_path / "last.old" / "junk").write_bytes(b"x")
    assert ckpt.recover(last) is False
    assert _weight(last) == 1.0 and not (tmp_path / "last.old").exists()
    # a kill while the very first checkpoint was written: nothing to restore, nothing invented
    first = tmp_path / "first"
    (tmp_path / "first.tmp").mkdir()
    assert ckpt.recover(first) is False and not first.exists()
    # save over a restored folder works and leaves no siblings
    _save(last, 3.0)
    assert _weight(last) == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.tmp", "last"]


# ------------------------------------------------------------------------------ training, slow
@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_store(tmp_path_factory.mktemp("kill") / "store", clips_per_class=6, frames=4, size=32)


@pytest.fixture(scope="module")
def clean(toy, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("clean") / "run"
    train(load_config("tiny", COMMON), toy, run, progress=False)
    return run


def _assert_same_result(run: Path, clean: Path) -> None:
    ref, got = json.loads((clean / TEST_JSON).read_text()), json.loads((run / TEST_JSON).read_text())
    assert got == ref
    ref_steps, got_steps = _rows(clean / STEPS_JSONL), _rows(run / STEPS_JSONL)
    assert [r["step"] for r in got_steps] == [r["step"] for r in ref_steps] == list(range(1, len(ref_steps) + 1))
    for a, b in zip(ref_steps, got_steps, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (a, b)
    key = [(r["epoch"], r["split"]) for r in _rows(clean / METRICS_JSONL)]
    assert [(r["epoch"], r["split"]) for r in _rows(run / METRICS_JSONL)] == key
    assert len(set(key)) == len(key)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == ["best", "last"], left


@pytest.mark.slow
def test_resume_after_a_kill_between_the_renames_of_save(toy, clean, tmp_path):
    """The exact on-disk state of a kill between save's renames (made by hand), then a real --resume."""
    run = tmp_path / "run"
    train(load_config("tiny", COMMON + ["run.max_steps=2"]), toy, run, progress=False)
    older = tmp_path / "older"
    shutil.copytree(run / "checkpoints" / "last", older)  # the checkpoint of step 2
    train(load_config("tiny", COMMON + ["run.max_steps=5"]), toy, run, resume=True, progress=False)
    # logged past the checkpoint that will be restored (step 2): steps 3-5 and epoch 1's rows
    assert len(_rows(run / STEPS_JSONL)) == 5 and len(_rows(run / METRICS_JSONL)) >= 1
    last = run / "checkpoints" / "last"
    os.replace(last, last.with_name("last.tmp"))   # the new checkpoint (step 5) written completely
    os.replace(older, last.with_name("last.old"))  # first rename done: the live (step 2) one moved aside
    summary = train(load_config("tiny", COMMON), toy, run, resume=True, progress=False)
    assert summary["step"] == len(_rows(clean / STEPS_JSONL))
    _assert_same_result(run, clean)


def _start(store: Path, out: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [str(BIN / "finetrain"), "run", "--store", str(store), "--out", str(out), "--quiet"]
    argv += ["--resume"] if resume else ["--config", "tiny", *COMMON]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL `proc` as soon as `ready()` holds; False when it finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("training neither reached the kill point nor finished")


def _steps_written(run: Path) -> int:
    path = run / STEPS_JSONL
    return path.read_text().count("\n") if path.is_file() else 0


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_clean_result(toy, clean, tmp_path):
    run = tmp_path / "run"
    # kill 1: inside checkpoint.save (its temporary folder exists), or right after step 3 if that is missed
    proc = _start(toy, run, resume=False)
    assert _kill_when(proc, lambda: (run / "checkpoints" / "last.tmp").exists() or _steps_written(run) >= 3)
    assert not (run / TEST_JSON).exists()
    # kill 2: mid-epoch 2, after steps were logged past the last checkpoint boundary
    proc = _start(toy, run, resume=True)
    assert _kill_when(proc, lambda: _steps_written(run) >= 6)
    proc = _start(toy, run, resume=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    _assert_same_result(run, clean)
