"""Bounded by construction: a run.json whose crop size is 40000, a checkpoint whose temporal position table
claims 100,001 frames, or a store whose attributes do, is refused in one line before anything is sized by
it (these were a 120 GB allocation attempt, memory past 7 GB, and a predict of 180 s and more)."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
import zarr
from safetensors.torch import save_file
from toy_store import write_toy_store
from typer.testing import CliRunner

from fineschema import layout, validate_store
from fineschema.limits import MAX_FRAMES, LimitError, check_frames, check_margin, check_size
from finetrain.cli import app as finetrain_app
from finetrain.config import load_config
from finetrain.train.checkpoint import FORMAT, MODEL_FILE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def _one_line(r, *words) -> None:
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and text.count("error:") == 1, r.output
    for w in words:
        assert w in text, (w, text)


@pytest.mark.parametrize("check,value", [(check_frames, 100_001), (check_frames, 0), (check_frames, "16"),
                                         (check_size, 40_000), (check_size, 2.5), (check_size, True),
                                         (check_margin, float("inf")), (check_margin, -1)])
def test_limits_refuse_values_outside_the_contract(check, value):
    with pytest.raises(LimitError):
        check(value, "where")


def test_limits_pass_the_values_fineclip_writes():
    assert check_frames(16, "w") == 16 and check_size(224.0, "w") == 224 and check_margin(0.6, "w") == 0.6


def test_a_checkpoint_claiming_100001_frames_is_refused_before_the_model_is_built(tmp_path):
    best = tmp_path / "run" / "checkpoints" / "best"
    best.mkdir(parents=True)
    cfg = load_config("tiny").to_json()
    meta = {"format": FORMAT, "config": cfg, "labels": json.dumps(["a", "b"])}
    save_file({"heads.frames.pos": torch.zeros(1, 100_002, 1)}, str(best / MODEL_FILE), metadata=meta)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never read")
    t0 = time.perf_counter()
    r = runner.invoke(finetrain_app, ["predict", "--run", str(tmp_path / "run"), str(video)])
    _one_line(r, "frames 100001 is outside", f"1..{MAX_FRAMES}")
    assert time.perf_counter() - t0 < 30


def test_a_store_whose_attributes_claim_40000_pixels_is_invalid(tmp_path):
    store = write_toy_store(tmp_path / "toy", clips_per_class=1)
    zarr.open_group(str(store / layout.ARRAYS_DIR), mode="r+").attrs["size"] = 40_000
    problems = validate_store(store)
    assert any("size 40000 is outside" in p for p in problems), problems


@pytest.mark.slow  # trains the tiny model for one epoch
def test_a_checkpoint_claiming_a_40000_pixel_crop_is_refused_by_predict(tmp_path):
    """predict extracts with the extraction settings the checkpoint carries; a tampered one is refused
    before anything is sized by it."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from finetrain.train.recipe import train

    store = write_toy_store(tmp_path / "toy", clips_per_class=2)
    run = tmp_path / "run"
    train(load_config("tiny", ["optim.epochs=1", "optim.batch_size=4", "run.threads=1"]), store, run,
          progress=False)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as fh:
        meta = fh.metadata()
    settings = {"frames": 4, "size": 40_000, "margin": 0.6, "smooth_sigma": 1.0, "face": "primary", "min_face": 40.0,
                "cut_change": 0.4, "min_found_ratio": 0.25, "crop_frame_sources": False, "landmark_mode": "image",
                "parser": "mesh", "min_landmark_score": 0.5, "second_detector": False}
    save_file(load_file(str(weights)), str(weights), metadata={**meta, "extraction": json.dumps(settings)})
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"never read")
    r = runner.invoke(finetrain_app, ["predict", "--run", str(run), str(video)])
    _one_line(r, "extraction settings", "size 40000 is outside")


def test_predicts_max_pixels_reaches_the_extraction_it_advises_raising():
    """media.py's refusal says "raise --max-pixels": predict has the option, and it reaches ExtractConfig."""
    from fineschema import ExtractSettings
    from finetrain.evaluate.predict import extract_config

    settings = ExtractSettings(frames=4, size=64, margin=0.6, smooth_sigma=1.0, face="primary", min_face=40.0,
                               cut_change=0.4, min_found_ratio=0.25, crop_frame_sources=False, landmark_mode="image",
                               parser="mesh", parser_weights_sha256=None, landmark_sha256=None, detector_sha256=None,
                               min_landmark_score=0.5, second_detector=False)
    assert extract_config(settings, 4, None, max_pixels=123_456).max_pixels == 123_456
    assert extract_config(settings, 4, None).max_pixels > 123_456  # the extract default otherwise
    r = runner.invoke(finetrain_app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert "--max-pixels" in r.output
