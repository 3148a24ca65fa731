"""Zero-shot training is an objective and a selection rule of the one training recipe, so it has what the
supervised loop has: DDP (2 gloo processes match one), `--resume` after `run.max_steps`, gradient
accumulation and metrics.csv; and the learning-rate schedule resumes exactly from its state dict."""

from __future__ import annotations

import csv
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
from finetrain.train.recipe import lr_factor, make_schedule, restore_schedule, schedule_state  # noqa: E402
from finetrain.train.zeroshot import train_zero_shot  # noqa: E402

BIN = Path(sys.executable).parent
# fold 1 of the toy store trains on 21 clips, each with a description; batches of 4 (no validation split)
COMMON = ["optim.epochs=2", "optim.batch_size=4", "run.threads=1", "model.streams=[frames, blendshapes]"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_toy_store(tmp_path_factory.mktemp("zs") / "store", clips_per_class=6, frames=4, size=32,
                           descriptions=True)


# ------------------------------------------------------------------------------------ fast, no training
def test_the_schedule_is_lr_factor_per_optimiser_step_and_resumes_from_its_state():
    cfg = load_config("tiny", ["optim.lr=0.01", "optim.warmup_steps=3", "optim.min_lr_ratio=0.1"])
    param = torch.nn.Parameter(torch.zeros(2))

    def fresh():
        opt = torch.optim.AdamW([param], lr=cfg.optim.lr)
        return opt, make_schedule(opt, cfg, total_steps=10)

    opt, sched = fresh()
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [0.01 * lr_factor(k, 10, 3, 0.1) for k in range(10)]
    assert seen[2] == pytest.approx(0.01) and seen[-1] < 0.01 * 0.2

    opt, sched = fresh()
    for _ in range(4):
        opt.step()
        sched.step()
    saved = json.loads(json.dumps(schedule_state(sched)))  # what state.json holds
    opt2, sched2 = fresh()
    restore_schedule(sched2, saved, step=4)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]  # restored with the optimiser's group settings
    rest = []
    for _ in range(6):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == seen[4:]


# ------------------------------------------------------------------------------------- training, slow
def _cli(args: list[str], torchrun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if torchrun:
        argv = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "finetrain.cli", *args]
    else:
        argv = [str(BIN / "finetrain"), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


# The longest float32 sum of a gradient element here: the global batch's tokens (8 clips x (4 frames +
# 1 class token)) times the 64-wide embedding of fineclip-tiny that each layer's backward sums over.
REDUCTION_TERMS = 8 * (4 + 1) * 64
STEPS = 4
DRIFT = reduction_drift(STEPS, REDUCTION_TERMS)  # 6.1e-4 (tests/float_bounds.py)


@pytest.mark.slow
def test_zero_shot_ddp_two_processes_match_one(store, tmp_path):
    """torchrun with 2 gloo processes at batch 4 each = one process at batch 8: the alignment loss is taken
    over the global batch, so the same clips meet the same negatives. Weights and losses agree to the
    float32 reduction-order bound `DRIFT` (derived above, not measured on one CPU)."""
    base = ["run", "--store", str(store), "--config", "tiny", "--quiet", "--mode", "zero-shot", "--text",
            "descriptions", "optim.epochs=2", "run.threads=1", "optim.lr=1e-2", "model.streams=[frames, blendshapes]"]
    one = _cli([*base, "--out", str(tmp_path / "one"), "optim.batch_size=8"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _cli([*base, "--out", str(tmp_path / "two"), "optim.batch_size=4"], torchrun=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    moved = max(float(a[k].abs().max()) for k in a if k.endswith("up.weight"))
    assert moved > 1e-3  # training did change the adapters
    worst, drift = relative_drift(a, b)
    assert drift < DRIFT, (worst, drift)
    steps_one, steps_two = _rows(tmp_path / "one" / "steps.jsonl"), _rows(tmp_path / "two" / "steps.jsonl")
    assert len(steps_one) == len(steps_two) == STEPS  # 21 clips: 2 global batches of 8 per epoch
    for x, y in zip(steps_one, steps_two, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=DRIFT)
    test_one = json.loads((tmp_path / "one" / "test.json").read_text())
    test_two = json.loads((tmp_path / "two" / "test.json").read_text())
    assert test_one["selected"] == test_two["selected"] == "last"
    assert test_two["confusion"] == test_one["confusion"]


@pytest.mark.slow
def test_zero_shot_resume_after_max_steps_ends_where_an_uninterrupted_run_ends(store, tmp_path):
    full = tmp_path / "full"
    ref = train_zero_shot(load_config("tiny", COMMON), store, full, text="descriptions", progress=False)
    part = tmp_path / "part"
    stopped = train_zero_shot(load_config("tiny", COMMON + ["run.max_steps=3"]), store, part, text="descriptions",
                              progress=False)
    assert stopped == {"step": 3, "stopped": True}  # in the middle of epoch 1 (5 steps per epoch)
    assert not (part / "test.json").exists()
    got = train_zero_shot(load_config("tiny", COMMON), store, part, text="descriptions", resume=True,
                          progress=False)
    a, b = _rows(full / "steps.jsonl"), _rows(part / "steps.jsonl")
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, 11))
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6), (x, y)
        assert y["lr"] == pytest.approx(x["lr"])
    w_full, w_part = _weights(full), _weights(part)
    assert all(torch.allclose(w_full[k], w_part[k], atol=1e-6) for k in w_full)
    assert got["test"] == ref["test"] and got["mode"] == "zero-shot"
    assert [(r["epoch"], r["split"]) for r in _rows(part / "metrics.jsonl")] == [(1, "train"), (2, "train")]


@pytest.mark.slow
def test_zero_shot_accumulates_and_writes_metrics_csv(store, tmp_path):
    """optim.accumulate=2: one optimiser step per two batches (5 batches of 4 give 2 steps an epoch), the
    schedule counts optimiser steps, and metrics.csv holds each epoch's row."""
    run = tmp_path / "run"
    cfg = load_config("tiny", COMMON + ["optim.accumulate=2", "optim.warmup_steps=2", "optim.lr=1e-2"])
    summary = train_zero_shot(cfg, store, run, text="descriptions", progress=False)
    steps = _rows(run / "steps.jsonl")
    assert summary["step"] == len(steps) == 4
    assert [r["epoch"] for r in steps] == [0, 0, 1, 1]
    assert [r["lr"] for r in steps] == pytest.approx([1e-2 * lr_factor(k, 4, 2, cfg.optim.min_lr_ratio)
                                                      for k in range(4)])
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["epoch"], r["split"], r["step"]) for r in rows] == [("1", "train", "2"), ("2", "train", "4")]
    assert float(rows[1]["loss"]) == pytest.approx(_rows(run / "metrics.jsonl")[1]["loss"])
    assert json.loads((run / "run.json").read_text())["mode"] == "zero-shot"
