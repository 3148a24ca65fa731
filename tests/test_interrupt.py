"""Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends extract and training with one
line saying how far they got and how to resume, exit status 130, no traceback from any process; the
same command then resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)  # its own process group, as a terminal job has


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 240) -> tuple[str, str]:
    t0 = time.time()
    while not ready() and time.time() - t0 < timeout and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    return proc.communicate(timeout=120)


@pytest.mark.slow
def test_ctrl_c_during_extract_is_one_line_and_the_rerun_resumes(tmp_path):
    from fineprep.synth import make_dataset

    root = make_dataset("dfew", tmp_path / "data", clips_per_class=4, seed=0, size=64, frames_range=(4, 5))
    out = tmp_path / "store"
    argv = [str(BIN / "fineprep"), "extract", "--dataset", "dfew", "--root", str(root), "--out", str(out),
            "--frames", "4", "--size", "64", "--workers", "2", "--batch-size", "2"]
    parts = out / "parts"
    proc = _start(argv)
    _, err = _interrupt_when(proc, lambda: parts.is_dir() and len(list(parts.glob("batch-*"))) >= 2)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("extract interrupted after ") and "of 14 batches" in last and "resume" in last, err
    again = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "batches already done, skipping them" in again.stderr


@pytest.mark.slow
def test_ctrl_c_during_training_says_where_the_checkpoint_is(tmp_path):
    from toy_store import write_toy_store

    store = write_toy_store(tmp_path / "store", clips_per_class=6)
    run = tmp_path / "run"
    argv = [str(BIN / "finetrain"), "run", "--store", str(store), "--config", "tiny", "--out", str(run), "--quiet",
            "optim.epochs=50", "run.threads=1"]
    proc = _start(argv)
    _, err = _interrupt_when(proc, lambda: (run / "checkpoints" / "last" / "state.json").is_file())
    assert proc.returncode == 130
    assert "Traceback" not in err, err[-3000:]
    last = " ".join(err.split())
    assert "training interrupted (the last checkpoint: run epoch" in last and "--resume" in last, err[-2000:]
