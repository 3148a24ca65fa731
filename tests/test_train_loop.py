"""The training loop on the tiny CLIP (random frozen weights) and toy stores with class-dependent
patterns: it learns through the visual streams alone, `--resume` continues exactly, a re-run of a
finished run does nothing, and a 2-process DDP run (torchrun, gloo) matches one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from float_bounds import reduction_drift, relative_drift  # noqa: E402
from toy_store import write_toy_store  # noqa: E402

from finetrain.config import load_config  # noqa: E402
from finetrain.train.recipe import STEPS_JSONL, TEST_JSON, train  # noqa: E402

BIN = Path(sys.executable).parent


def _steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / STEPS_JSONL).read_text().splitlines()]


@pytest.mark.slow
def test_learns_from_visual_streams_alone(tmp_path):
    """No blendshapes, no descriptions: only adapters on the frozen image encoder can separate classes."""
    store = write_toy_store(tmp_path / "store", clips_per_class=10, frames=4, size=32)
    cfg = load_config("tiny", ["optim.epochs=25", "model.streams=[frames, parsing, landmarks]", "run.threads=1"])
    summary = train(cfg, store, tmp_path / "run", progress=False)
    chance = 1 / 7
    assert summary["step"] >= 70
    assert summary["test"]["uar"] > 3 * chance, summary["test"]
    test = json.loads((tmp_path / "run" / TEST_JSON).read_text())
    assert test["count"] == 35 and test["selected"] == "best"
    assert (tmp_path / "run" / "predictions.parquet").is_file()


@pytest.mark.slow
def test_resume_continues_exactly_and_finished_runs_do_nothing(tmp_path):
    store = write_toy_store(tmp_path / "store", clips_per_class=6, frames=4, size=32, descriptions=True)
    common = ["optim.epochs=2", "optim.batch_size=4", "run.threads=1"]
    full = tmp_path / "full"
    train(load_config("tiny", common), store, full, progress=False)
    ref = _steps(full)
    assert len(ref) == 6 and all("desc" in r for r in ref)  # descriptions feed the contrastive term

    part = tmp_path / "part"
    stopped = train(load_config("tiny", common + ["run.max_steps=2"]), store, part, progress=False)
    assert stopped == {"step": 2, "stopped": True}  # in the middle of epoch 1
    train(load_config("tiny", common), store, part, resume=True, progress=False)
    got = _steps(part)
    assert [r["step"] for r in got] == list(range(1, 7))
    for a, b in zip(ref, got, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), (a, b)
        assert b["lr"] == pytest.approx(a["lr"])
    w_full = load_file(str(full / "checkpoints/last/model.safetensors"))
    w_part = load_file(str(part / "checkpoints/last/model.safetensors"))
    assert all(torch.allclose(w_full[k], w_part[k], atol=1e-6) for k in w_full)

    before = (part / STEPS_JSONL).read_text()
    summary = train(load_config("tiny", common), store, part, resume=True, progress=False)
    assert (part / STEPS_JSONL).read_text() == before
    assert summary["test"]["uar"] == json.loads((part / TEST_JSON).read_text())["uar"]


def _cli(args: list[str], torchrun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if torchrun:
        argv = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "finetrain.cli", *args]
    else:
        argv = [str(BIN / "finetrain"), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 gloo processes at batch 4 each = one process at batch 8 (same samples per step)."""
    store = write_toy_store(tmp_path / "store", clips_per_class=6, frames=4, size=32)
    base = ["run", "--store", str(store), "--config", "tiny", "--quiet", "optim.epochs=2", "run.threads=1",
            "optim.lr=1e-2"]  # a large step, so two epochs move the adapters well clear of 1e-3
    one = _cli([*base, "--out", str(tmp_path / "one"), "optim.batch_size=8"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli([*base, "--out", str(tmp_path / "two"), "optim.batch_size=4"], torchrun=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_file(str(tmp_path / "one/checkpoints/last/model.safetensors"))
    b = load_file(str(tmp_path / "two/checkpoints/last/model.safetensors"))
    moved = max(float(a[k].abs().max()) for k in a if k.endswith("up.weight"))
    assert moved > 1e-3  # training did change the adapters
    steps_one, steps_two = _steps(tmp_path / "one"), _steps(tmp_path / "two")
    assert len(steps_one) == len(steps_two) == 2
    # the longest float32 sum: the vision tower's weight gradients over 8 clips x 4 frames x 17 tokens
    # (16 patches of a 64 px input and the class token) x its 64-wide embedding (tests/float_bounds.py)
    bound = reduction_drift(len(steps_one), 8 * 4 * 17 * 64)
    worst, drift = relative_drift(a, b)
    assert drift < bound, (worst, drift)  # (steps.jsonl logs rank 0's own mean loss: not comparable here)
