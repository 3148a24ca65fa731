"""No write through a link: a symlink planted where a writer would write (the store's locks, a part, the
manifest, arrays.zarr under --overwrite, a run's checkpoint or run.json, an export's annotation file or
frame folder) is refused in one line, and the file it points at is left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_hostile_input import _store
from toy_store import write_toy_store
from typer.testing import CliRunner

from fineprep import storelock
from fineprep.cli import app as fineprep_app
from fineprep.inspect import open_store
from fineprep.inspect.export import export_dfer_clip
from fineschema import layout
from fineschema.nolinks import LinkError, open_nofollow, refuse_links_under
from finetrain.cli import app as finetrain_app

runner = CliRunner()
PRECIOUS = "precious, outside every store\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text(PRECIOUS)
    return path


def _one_line(r, *words) -> None:
    text = " ".join(r.output.split())
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output and text.count("error:") == 1, r.output
    for w in words:
        assert w in text, (w, text)


def test_open_nofollow_refuses_a_link_and_opens_a_file(tmp_path, victim):
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(LinkError, match="symbolic link"):
        open_nofollow(link, os.O_RDWR | os.O_CREAT)
    os.close(open_nofollow(tmp_path / "plain", os.O_RDWR | os.O_CREAT))
    assert victim.read_text() == PRECIOUS


@pytest.mark.parametrize("name", [".lock", ".lock.describe-0of1"])
def test_a_linked_lock_file_is_refused_and_the_victim_kept(tmp_path, victim, name):
    store = tmp_path / "fresh"  # a fresh --out holding only the link
    store.mkdir()
    (store / name).symlink_to(victim)
    lock = storelock.writer_lock(store) if name == ".lock" else storelock.shard_lock(store, (0, 1))
    with pytest.raises(storelock.LinkedStore, match=name), lock:
        pass
    assert victim.read_text() == PRECIOUS


@pytest.mark.parametrize("where", [layout.MANIFEST_FILE, f"{layout.PARTS_DIR}/part-00000.parquet",
                                   f"{layout.DESCRIPTIONS_DIR}/part-000.parquet", layout.ARRAYS_DIR,
                                   f"{layout.ARRAYS_DIR}/frames/c/0/0/0/0/0"])
def test_a_link_in_a_store_is_refused_by_its_writers(tmp_path, victim, where):
    store = tmp_path / "store"
    (store / where).parent.mkdir(parents=True, exist_ok=True)
    (store / where).symlink_to(victim)
    writers = [lambda: storelock.writer_lock(store)]
    if where.count("/") < 2:  # describe writes no chunk: it checks arrays.zarr itself but does not walk it
        writers.append(lambda: storelock.shard_lock(store, (0, 2)))
    for lock in writers:
        with pytest.raises(storelock.LinkedStore, match=Path(where).name), lock():
            pass
    assert victim.read_text() == PRECIOUS


def test_describe_refuses_a_store_holding_a_link_in_one_line(tmp_path, victim):
    store = _store(tmp_path / "store")
    (store / ".lock.describe-0of1").symlink_to(victim)
    r = runner.invoke(fineprep_app, ["describe", "--store", str(store), "--model", "tiny-random", "--engine", "hf"])
    _one_line(r, "symbolic link", ".lock.describe-0of1")
    assert victim.read_text() == PRECIOUS


def test_refuse_links_under_sees_nested_links_and_allows_a_linked_root(tmp_path, victim):
    real = tmp_path / "real"
    (real / "a" / "b").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(real)
    refuse_links_under(tmp_path / "alias")  # the folder named on the command line may be a link
    (real / "a" / "b" / "x").symlink_to(victim)
    with pytest.raises(LinkError, match="a/b/x"):
        refuse_links_under(tmp_path / "alias")


@pytest.mark.parametrize("where", ["run.json.tmp", "checkpoints", "checkpoints/last.tmp", "steps.jsonl"])
def test_training_refuses_a_run_folder_holding_a_link(tmp_path, victim, where):
    store = write_toy_store(tmp_path / "toy", clips_per_class=2)
    run = tmp_path / "run"
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).symlink_to(victim if where.endswith((".tmp", ".jsonl")) else tmp_path)
    r = runner.invoke(finetrain_app, ["run", "--store", str(store), "--out", str(run), "--config", "tiny", "--quiet"])
    _one_line(r, "symbolic link", where.split("/")[-1])
    assert victim.read_text() == PRECIOUS and not (run / "config.yaml").exists()


@pytest.mark.parametrize("where", ["DFEW_set_1_train.txt", "frames", "frames/.tmp-00001", "frames/00002"])
def test_export_refuses_a_link_where_it_writes(tmp_path, victim, where):
    store = _store(tmp_path / "store")
    out = tmp_path / "ann"
    (out / where).parent.mkdir(parents=True, exist_ok=True)
    if where.endswith(".txt"):  # a link to a file inside --out (one outside is refused by safe_join already)
        target = out / "keep.txt"
        target.write_text(PRECIOUS)
    elif where == "frames/00002":  # a clip's folder linked inside frames/ (a link leading out is skipped)
        target = out / "frames" / "elsewhere"
        target.mkdir()
    else:
        target = tmp_path / "victim_dir"
        target.mkdir()
    (out / where).symlink_to(target)
    r = runner.invoke(fineprep_app, ["export", "--store", str(store), "--out", str(out), "--frames"])
    _one_line(r, "symbolic link")
    assert victim.read_text() == PRECIOUS and (not target.is_file() or target.read_text() == PRECIOUS)
    assert not target.is_dir() or not list(target.iterdir())
    with pytest.raises(LinkError):
        export_dfer_clip(open_store(store), out, frames=True)


@pytest.mark.slow  # a fineprep extract subprocess
def test_extract_overwrite_with_a_linked_arrays_zarr_is_refused_and_the_target_kept(tmp_path):
    import subprocess
    import sys

    from extract_data import write_video

    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "clip0.mp4", 10, size=128)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text(PRECIOUS)
    store = tmp_path / "store"
    store.mkdir()
    (store / layout.ARRAYS_DIR).symlink_to(target)
    r = subprocess.run([str(Path(sys.executable).parent / "fineprep"), "extract", "--dataset", "folder", "--root",
                        str(data), "--out", str(store), "--frames", "4", "--size", "48", "--workers", "1",
                        "--overwrite"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and any("symbolic link" in ln for ln in lines), r.stderr
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"] and (target / "keep.txt").read_text() == PRECIOUS
