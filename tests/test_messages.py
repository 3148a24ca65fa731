"""Bad input gets one line that names the file and the reason: a damaged chunk under `fineprep show`, a
checkpoint or pretrained file that is not safetensors under `finetrain eval/predict/run --resume`, and
numbers no run can use, refused before anything is built."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_store import write_toy_store  # noqa: E402

from fineprep.cli import app as fineprep_app  # noqa: E402
from finetrain.cli import app as finetrain_app  # noqa: E402
from finetrain.config import ConfigError, load_config  # noqa: E402
from finetrain.train import checkpoint as ckpt  # noqa: E402

runner = CliRunner()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return write_toy_store(tmp_path_factory.mktemp("messages") / "store", clips_per_class=2, frames=4, size=32)


# ------------------------------------------------------------------------------------ fineprep show
def test_show_on_a_damaged_chunk_is_one_line_naming_clip_and_array(tmp_path, store):
    broken = tmp_path / "store"
    shutil.copytree(store, broken)
    chunk = broken / "arrays.zarr" / "frames" / "c" / "0" / "0" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x13\x37" * 150)
    r = runner.invoke(fineprep_app, ["show", "--store", str(broken), "--clip", "toy00000",
                                     "--out", str(tmp_path / "sheet.png")])
    assert r.exit_code == 2, r.output
    lines = _lines(r.output)
    assert len(lines) == 1, r.output
    assert "toy00000" in lines[0] and "arrays.zarr/frames" in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "sheet.png").exists()
    # the damage is local: the next clip still draws
    r = runner.invoke(fineprep_app, ["show", "--store", str(broken), "--clip", "toy00001",
                                     "--out", str(tmp_path / "ok.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ok.png").stat().st_size > 1000


# ------------------------------------------------------------------------- checkpoints, not pickles
class _Payload:
    """Stands for any object a pickle could smuggle in."""


def _pickled_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    torch.save({"adapter.weight": torch.zeros(2, 2), "x": _Payload()}, folder / ckpt.MODEL_FILE)
    (folder / ckpt.STATE_FILE).write_text('{"epoch": 1, "step": 1}')
    return folder


def _assert_refusal(output: str, path: Path) -> None:
    lines = _lines(output)
    assert len(lines) == 1, output
    assert str(path) in lines[0] and "refused" in lines[0] and "pickle" in lines[0], lines[0]
    assert "weights_only" not in output and "Traceback" not in output


def test_checkpoint_functions_refuse_a_pickle(tmp_path):
    folder = _pickled_checkpoint(tmp_path / "best")
    for call in (lambda: ckpt.read_meta(folder), lambda: ckpt.read_tensors(folder / ckpt.MODEL_FILE),
                 lambda: ckpt.tensor_shapes(folder / ckpt.MODEL_FILE)):
        with pytest.raises(ckpt.CheckpointError, match="refused: it is a PyTorch/pickle file") as info:
            call()
        assert "weights_only" not in str(info.value)
    (folder / ckpt.MODEL_FILE).write_bytes(b"\x00" * 7)
    with pytest.raises(ckpt.CheckpointError, match="refused: not a safetensors file"):
        ckpt.read_meta(folder)


def test_eval_and_predict_refuse_a_pickled_checkpoint_in_one_line(tmp_path, store):
    run = tmp_path / "run"
    folder = _pickled_checkpoint(run / "checkpoints" / "best")
    r = runner.invoke(finetrain_app, ["eval", "--run", str(run), "--store", str(store)])
    assert r.exit_code == 2
    _assert_refusal(r.output, folder / ckpt.MODEL_FILE)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not looked at")
    r = runner.invoke(finetrain_app, ["predict", "--run", str(run), str(video)])
    assert r.exit_code == 2
    _assert_refusal(r.output, folder / ckpt.MODEL_FILE)


@pytest.mark.slow  # builds the tiny model before it reads the checkpoint
def test_resume_refuses_a_pickled_checkpoint_in_one_line(tmp_path, store):
    run = tmp_path / "run"
    run.mkdir()
    # the config as a run on this store records it: no descriptions, so no description stream
    load_config("tiny", ["optim.epochs=1", "model.streams=[frames,parsing,landmarks,blendshapes]"]).dump(
        run / "config.yaml")
    folder = _pickled_checkpoint(run / "checkpoints" / "last")
    r = runner.invoke(finetrain_app, ["run", "--store", str(store), "--out", str(run), "--resume", "--quiet"])
    assert r.exit_code == 2
    errors = [line for line in _lines(r.output) if "error" in line]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    _assert_refusal(errors[0], folder / ckpt.MODEL_FILE)


def test_a_pickled_pretrained_file_is_refused_without_torchs_advice(tmp_path, store):
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload()}, evil)
    r = runner.invoke(finetrain_app, ["run", "--store", str(store), "--out", str(tmp_path / "r"), "--config", "tiny",
                                      f"model.pretrained={evil}", "--quiet"])
    assert r.exit_code == 2
    errors = [line for line in _lines(r.output) if "error" in line]
    assert len(errors) == 1, r.output
    assert "model.pretrained" in errors[0] and str(evil) in errors[0] and "refused" in errors[0]
    assert "_Payload" in errors[0]
    assert "weights_only" not in r.output and "Traceback" not in r.output


# --------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("override, key", [
    ("optim.lr=-0.001", "optim.lr"), ("optim.lr=.nan", "optim.lr"), ("optim.lr=0", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"), ("optim.epochs=0", "optim.epochs"), ("optim.batch_size=-4", "optim.batch_size"),
    ("optim.accumulate=0", "optim.accumulate"), ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.min_lr_ratio=2", "optim.min_lr_ratio"), ("loss.logit_scale=0", "loss.logit_scale"),
    ("loss.label_smoothing=1", "loss.label_smoothing"), ("data.num_workers=-1", "data.num_workers"),
    ("model.temporal_dropout=1.5", "model.temporal_dropout"), ("run.eval_every=0", "run.eval_every"),
])
def test_unusable_numbers_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("tiny", [override])


def test_boundary_values_that_runs_use_are_accepted():
    cfg = load_config("tiny", ["optim.weight_decay=0", "optim.warmup_steps=0", "optim.grad_clip=0",
                               "loss.label_smoothing=0", "optim.min_lr_ratio=1", "data.num_workers=0",
                               "run.max_steps=0", "loss.negative=0"])
    assert cfg.optim.grad_clip == 0 and cfg.optim.min_lr_ratio == 1.0


def test_cli_refuses_a_nan_learning_rate_before_building_anything(tmp_path):
    out = tmp_path / "r"
    r = runner.invoke(finetrain_app, ["run", "--store", str(tmp_path / "no-store"), "--out", str(out),
                                      "--config", "tiny", "optim.lr=.nan"])
    assert r.exit_code == 2
    lines = _lines(r.output)
    assert len(lines) == 1 and "'optim.lr'" in lines[0] and "nan" in lines[0], r.output
    assert not out.exists()  # refused before the store was opened or the model built
