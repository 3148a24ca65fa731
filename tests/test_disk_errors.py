"""Disk full and other OS errors are one line naming the cause, the place and that a re-run resumes: at
store creation, in the middle of an extract ("N clips failed: the disk is full", exit 1, and the re-run
with space extracts them), at a describe part, at an export, at a training run's files and checkpoint
(never blamed on `model.pretrained`). Full disks are small tmpfs mounts (root only; skipped otherwise)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile_input import _store
from toy_store import write_toy_store
from typer.testing import CliRunner

from fineprep.cli import app as fineprep_app
from fineschema.oserrors import machine_errno, machine_error_line
from finetrain.cli import app as finetrain_app

runner = CliRunner()
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes under tmp_path; unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (root needed): {r.stderr.strip()[:160]}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> None:
    """Use up what is left of `disk`."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _one_line(output: str, *words: str) -> str:
    text = " ".join(output.split())
    assert "Traceback" not in output and text.count("error:") == 1, output
    for w in words:
        assert w in text, (w, text)
    return text


# ------------------------------------------------------------------------------- the errno, traced
def test_the_errno_is_found_behind_wrappers_and_the_line_says_what_to_do():
    assert machine_errno(OSError(errno.ENOSPC, "No space left on device", "/s/x")) == errno.ENOSPC
    wrapped = Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')
    assert machine_errno(wrapped) == errno.ENOSPC
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/ro/run.json")
        except OSError as inner:
            raise RuntimeError("writing failed") from inner
    except RuntimeError as outer:
        line = machine_error_line(outer, "finetrain run into /ro")
    assert line.startswith("finetrain run into /ro failed at /ro/run.json: the file system is read-only (EROFS)")
    assert "run the same command again: it resumes" in line
    assert machine_errno(ValueError("a clip that does not decode")) is None


# ------------------------------------------------------------------------------- each writer
def test_export_onto_a_full_disk_is_one_line(small_disk, tmp_path):
    store = _store(tmp_path / "store")
    disk = small_disk(64 * 1024)
    _fill(disk)
    r = runner.invoke(fineprep_app, ["export", "--store", str(store), "--out", str(disk / "ann"), "--frames"])
    assert r.exit_code == 2
    _one_line(r.output, "the disk is full (ENOSPC)", str(disk))


@pytest.mark.slow  # builds the tiny model
@pytest.mark.parametrize("room", [0, 48 * 1024])
def test_training_onto_a_full_disk_blames_the_disk_not_the_pretrained_weights(small_disk, tmp_path, room):
    """room 0: full before run.json; 48 KiB: config and logs fit, the checkpoint does not."""
    store = write_toy_store(tmp_path / "toy", clips_per_class=2)
    disk = small_disk(room or 4096)
    if not room:
        _fill(disk)
    r = runner.invoke(finetrain_app, ["run", "--store", str(store), "--out", str(disk / "run"), "--config", "tiny",
                                      "optim.epochs=1", "optim.batch_size=4", "run.threads=1", "--quiet"])
    assert r.exit_code == 2, r.output
    text = _one_line(r.output, "the disk is full (ENOSPC)", "run the same command again")
    error = text[text.index("error:"):]  # the notes before it may name model.pretrained (random weights)
    assert "model.pretrained" not in error


@pytest.mark.slow  # loads the tiny random describer
def test_describe_onto_a_full_disk_is_one_line(small_disk, tmp_path):
    import shutil

    disk = small_disk(4 * 1024 * 1024)
    store = Path(shutil.copytree(_store(tmp_path / "store"), disk / "store"))
    _fill(disk)
    r = subprocess.run([str(BIN / "fineprep"), "describe", "--store", str(store), "--model", "tiny-random",
                        "--engine", "hf", "--no-progress"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    _one_line(r.stderr, "the disk is full (ENOSPC)")


@pytest.mark.slow  # runs mediapipe on Dask
def test_extract_onto_a_full_disk_says_so_and_a_rerun_with_space_finishes(small_disk, tmp_path):
    from extract_data import write_video

    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        write_video(data / f"clip{k}.mp4", 10 + k, size=128)
    cmd = [str(BIN / "fineprep"), "extract", "--dataset", "folder", "--root", str(data), "--frames", "4",
           "--size", "48", "--workers", "1", "--batch-size", "1"]
    full = small_disk(4096)
    _fill(full)
    r = subprocess.run([*cmd, "--out", str(full / "store")], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    _one_line(r.stderr, "the disk is full (ENOSPC)", "resumes")

    disk = small_disk(220 * 1024)  # the store's metadata and about two clips' chunks (tmpfs counts pages)
    out = disk / "store"
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    text = " ".join(r.stderr.split())
    assert r.returncode == 1 and "clips failed: the disk is full (ENOSPC)" in text, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and text.count("error:") == 1
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space again
    again = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    from fineschema import validate_store
    from fineschema.store_io import read_manifest

    assert validate_store(out) == []
    assert read_manifest(out).column("status").to_pylist().count("ok") == 4


@pytest.mark.slow  # trains the tiny model once, then eval, report and --resume on it
def test_a_read_only_run_folder_is_one_line_for_eval_report_and_resume(small_disk, tmp_path):
    import shutil

    from finetrain.config import load_config
    from finetrain.train.recipe import train

    store = write_toy_store(tmp_path / "toy", clips_per_class=2)
    made = tmp_path / "made"
    train(load_config("tiny", ["optim.epochs=1", "optim.batch_size=4", "run.threads=1", "run.max_steps=1"]), store,
          made, progress=False)
    disk = small_disk(16 * 1024 * 1024)
    run = Path(shutil.copytree(made, disk / "run"))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    for args in (["eval", "--run", str(run), "--store", str(store)], ["report", "--run", str(run)],
                 ["run", "--store", str(store), "--out", str(run), "--resume", "--quiet"]):
        r = runner.invoke(finetrain_app, args)
        assert r.exit_code == 2, (args, r.output)
        _one_line(r.output, "the file system is read-only (EROFS)")
