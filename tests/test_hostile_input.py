"""Hostile input: a store or a dataset written to hurt the tools, or one honest mistake in thousands.

Paths from a store never leave the output folder; one bad file name, one huge image or one worker
killed for memory costs only its own clip; what the index noticed stays on the clip's row; settings
that will hurt are warned about with their numbers.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extract_data import write_frames, write_video
from test_datasets import _mafw
from test_inspect import make_store
from typer.testing import CliRunner

from fineprep.cli import app
from fineprep.datasets import index_dataset, index_report
from fineprep.extract import media, runner
from fineprep.extract.store import manifest_row, rows_table
from fineprep.inspect import open_store
from fineprep.inspect.export import SKIP_OUTSIDE, export_dfer_clip
from fineschema import StoreError, layout, tables
from fineschema.labels import label_set
from fineschema.paths import UnsafePathError, safe_join

FINEPREP = str(Path(sys.executable).parent / "fineprep")


def _store(path: Path) -> Path:
    """test_inspect's four-clip store, stamped with this fineclip's schema version."""
    import zarr

    from fineschema import SCHEMA_VERSION

    store = make_store(path)
    group = zarr.open_group(str(store / layout.ARRAYS_DIR), mode="r+")
    group.attrs["schema_version"] = SCHEMA_VERSION
    for spec in layout.ARRAYS:  # every array the contract lists holds a chunk for each ok clip
        if spec.name not in ("frames", "parsing", "landmarks", "face_found"):
            arr = group[spec.name].with_config({"write_empty_chunks": True})
            for i in range(3):
                arr[i] = np.zeros(arr.shape[1:], arr.dtype)
    return store


def _set_clip_id(store: Path, old: str, new: str) -> None:
    path = store / layout.MANIFEST_FILE
    t = pq.read_table(path)
    ids = [new if c == old else c for c in t.column("clip_id").to_pylist()]
    pq.write_table(t.set_column(t.schema.get_field_index("clip_id"), "clip_id", pa.array(ids, pa.string())), path)


def _huge_jpeg(path: Path, side: int = 26000) -> Path:
    """A real 64x64 JPEG whose header (SOF0) claims `side` x `side`: what a decoder would allocate for."""
    data = bytearray(cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------------ 5. export stays inside --out
def test_safe_join_refuses_every_way_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    assert safe_join(tmp_path / "out", "frames", "Action/Sad/0010") == tmp_path / "out/frames/Action/Sad/0010"
    for bad in ("../x", "a/../../x", "/etc", "C:/x", "", ".", "a/..", "x\x00y", "link/x"):
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path / "out", bad)


@pytest.mark.parametrize("hostile", ["../../victim", "ABSOLUTE", "linked/x"])
def test_export_frames_never_touches_anything_outside_out(tmp_path, hostile):
    store = _store(tmp_path / "store")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    out = tmp_path / "ann"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "linked").symlink_to(victim)
    clip_id = str(victim) if hostile == "ABSOLUTE" else hostile
    _set_clip_id(store, "00001", clip_id)
    r = CliRunner().invoke(app, ["export", "--store", str(store), "--out", str(out), "--frames"])
    assert r.exit_code == 0, r.output
    assert (victim / "keep.txt").read_text() == "precious" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert "skipped 1 clips: path from the store would leave --out" in r.output
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00002", "00003", "linked"]
    text = "".join(p.read_text() for p in out.glob("*.txt"))
    assert "victim" not in text and text.count("frames/0000") == 4  # clips 2 and 3, each in 2 files
    summary = export_dfer_clip(open_store(store), out, frames=True)
    assert summary["skipped"][SKIP_OUTSIDE] == 1 and summary["frames_written"] == 2


def test_export_refuses_a_dataset_name_that_would_name_files_elsewhere(tmp_path):
    import zarr

    store = _store(tmp_path / "store")
    zarr.open_group(str(store / layout.ARRAYS_DIR), mode="r+").attrs["dataset"] = "../../evil"
    with pytest.raises(StoreError, match="not a plain name"):
        export_dfer_clip(open_store(store), tmp_path / "ann")
    assert not list(tmp_path.glob("**/*evil*"))


# -------------------------------------------------------------------------- 6. one bad file name
def test_bad_names_and_symlink_loops_are_clip_statuses(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "good.mp4").write_bytes(b"\x00")
    (root / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"\x00")                 # Latin-1 name, not UTF-8
    (root / "loop.mp4").symlink_to("loop.mp4")                                  # a file symlink loop
    bad_dir = root / os.fsdecode(b"fr\xe4mes")  # (cv2.imwrite on such a path crashes the process)
    bad_dir.mkdir()
    (bad_dir / "1.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    entries = {e.clip_id: e for e in index_dataset("folder", root)}
    assert set(entries) == {"good", "caf\\xe9", "loop", "fr\\xe4mes"}
    assert entries["good"].status == tables.STATUS_PENDING
    for cid in ("caf\\xe9", "fr\\xe4mes"):
        assert entries[cid].status == tables.STATUS_BAD_PATH and "not valid UTF-8" in entries[cid].error
    assert entries["loop"].status == tables.STATUS_BAD_PATH and "symlink loop" in entries["loop"].error
    rows = [manifest_row(e, label_set("mafw"), -1, e.status, e.error) for e in entries.values()]
    pq.write_table(rows_table(rows), tmp_path / "m.parquet")  # every id and reason is storable
    assert "\n" not in "".join(e.error for e in entries.values() if e.error)


def test_symlink_loop_in_a_split_dataset_is_bad_path(tmp_path):
    root = _mafw(tmp_path / "mafw")
    (root / "data/clips/00200.mp4").symlink_to("00200.mp4")  # the listed-but-absent clip, now a loop
    entries = {e.clip_id: e for e in index_dataset("mafw", root)}
    assert entries["00200"].status == tables.STATUS_BAD_PATH and "symlink loop" in entries["00200"].error
    assert entries["03747"].status == tables.STATUS_PENDING


# ------------------------------------------------------------------------------ 7. one huge image
def test_huge_image_is_refused_from_its_header(tmp_path):
    f = _huge_jpeg(tmp_path / "f" / "1.jpg")
    with pytest.raises(media.ClipFailure, match=r"26000x26000 \(676 MP\), above the 50 MP limit") as err:
        media.read_image_files([f], 4, "f")
    assert err.value.status == tables.STATUS_ERROR and "GiB of worker memory" in str(err.value)
    with pytest.raises(media.ClipFailure, match="above the 100 MP"):
        media.read_image_files([_huge_jpeg(tmp_path / "g" / "1.jpg", 12000)], 4, "g", max_pixels=100_000_000)


def test_large_frames_decode_reduced(tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (3600, 4000, 3), dtype=np.uint8)
    f = tmp_path / "big.jpg"
    cv2.imwrite(str(f), big)
    reduced = media.read_image_files([f], 1, "x", need_side=224)            # 3600 / 4 = 900 >= 4 x 224
    assert reduced.frames[0].shape == (900, 1000, 3)
    assert media.read_image_files([f], 1, "x", need_side=448).frames[0].shape == (1800, 2000, 3)
    assert media.read_image_files([f], 1, "x").frames[0].shape == (3600, 4000, 3)
    assert media.reduction(224, 224, 224) == 1


# ------------------------------------------------------------------------------ 8. index notes
def _hostile_mafw(root: Path) -> Path:
    """_mafw's four clips over five folds, plus: 00025 called `surprise` once (4 x anger), and listed in
    fold 1's test set as well as its train set; 03747 called `fear` in all five of its files (a 5-5 tie);
    a bad line for 00100, which is listed validly elsewhere."""
    root = _mafw(root)
    single = root / "Train & Test Set/single/no_caption"
    train1 = single / "set_1/train.txt"
    train1.write_text(train1.read_text().replace("00025.mp4 anger", "00025.mp4 surprise"))
    with open(single / "set_1/test.txt", "a") as f:
        f.write("00025.mp4 anger\r\n")
    for fold in range(1, 6):
        split = "test" if fold in (1, 5) else "train"
        with open(single / f"set_{fold}" / f"{split}.txt", "a") as f:
            f.write("03747.mp4 fear\r\n")
    with open(single / "set_2/train.txt", "a") as f:
        f.write("00100.mp4 notalabel\r\n")
    return root


def test_index_notes_majority_ties_and_fold_overlap(tmp_path):
    root = _hostile_mafw(tmp_path / "mafw")
    entries = {e.clip_id: e for e in index_dataset("mafw", root)}
    e = entries["00025"]
    assert (e.status, e.label, e.error) == (tables.STATUS_PENDING, "anger", None)
    assert e.test_folds == [1, 2] and e.train_folds == [3, 4, 5], "dropped from fold 1's train side"
    assert "label conflict: 'anger' 5x" in e.notes_text and "'surprise' 1x" in e.notes_text
    assert "majority 'anger' kept" in e.notes_text
    assert "in both train and test of fold 1; dropped from the train side" in e.notes_text
    tie = entries["03747"]
    assert tie.status == tables.STATUS_BAD_ANNOTATION and "no majority" in tie.error and tie.label is None
    assert "bad line also found" in entries["00100"].notes_text and entries["00100"].status == "pending"
    assert index_report(list(entries.values())) == [
        "index: 2 clip(s) with a label conflict between split files (majority kept, or refused); "
        "see the manifest's notes column",
        "index: 1 clip(s) in both the train and the test list of a fold (dropped from that train side, or "
        "refused); see the manifest's notes column",
        "index: 1 clip(s) with a bad line elsewhere in the split files; see the manifest's notes column",
    ]
    rows = [manifest_row(x, label_set("mafw"), 0, tables.STATUS_OK, None) for x in entries.values()]
    notes = dict(zip(*rows_table(rows).select(["clip_id", "notes"]).to_pydict().values(), strict=True))
    assert notes["00025"] == e.notes_text and notes["00200"] is None

    strict = {x.clip_id: x for x in index_dataset("mafw", root, strict=True)}
    assert strict["00025"].status == tables.STATUS_BAD_ANNOTATION
    assert "--strict refuses any disagreement" in strict["00025"].error
    assert "in both train and test of fold 1; refused (--strict)" in strict["00025"].notes_text


# ----------------------------------------------------------------------- 11. settings that will hurt
def test_resource_warnings_give_the_numbers():
    assert runner.resource_warnings(2, "3GiB", frames=16, size=224, cores=2) == []
    (cores,) = runner.resource_warnings(8, "3GiB", frames=16, size=224, cores=2)
    assert "--workers 8 is above the 2 core(s)" in cores and "6 worker(s) share cores" in cores
    (memory,) = runner.resource_warnings(None, "300MiB", frames=16, size=224, cores=2)
    need = runner.worker_need_mb(16, 224)
    assert "--memory-limit 300.00 MiB per worker is below the ~" in memory and "16 frames of 224x224" in memory
    assert 400 < need < 450
    assert len(runner.resource_warnings(4, "1GiB", frames=16, size=2048, cores=2)) == 2


# ------------------------------------------------------------ a real extract over all of it (Dask)
@pytest.mark.slow
def test_extract_records_bad_names_huge_images_and_index_notes(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_video(root / "good1.mp4", 20)
    write_video(root / "good2.mp4", 24)
    (root / os.fsdecode(b"caf\xe9.mp4")).write_bytes((root / "good1.mp4").read_bytes())
    (root / "loop.mp4").symlink_to("loop.mp4")
    write_frames(root / "framesGood", 6, size=96)
    for i in range(1, 7):
        _huge_jpeg(root / "framesHuge" / f"{i}.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\ngood1.mp4,happy,train\ngood1.mp4,happy,test\n"
                      "good2.mp4,happy,\ngood2.mp4,sad,\ngood2.mp4,sad,\n")
    out = tmp_path / "store"
    proc = subprocess.run([FINEPREP, "extract", "--dataset", "folder", "--root", str(root), "--labels", str(labels),
                           "--out", str(out), "--frames", "4", "--size", "64", "--workers", "1",
                           "--batch-size", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = pq.read_table(out / layout.MANIFEST_FILE).to_pandas().set_index("clip_id")
    assert sorted(m.index) == ["caf\\xe9", "framesGood", "framesHuge", "good1", "good2", "loop"]
    for cid in ("good1", "good2", "framesGood"):
        assert m.loc[cid, "status"] == tables.STATUS_OK, (cid, m.loc[cid, "error"])
    huge = m.loc["framesHuge"]
    assert huge.status == tables.STATUS_ERROR and "26000x26000" in huge.error and "memory" in huge.error
    assert m.loc["caf\\xe9", "status"] == m.loc["loop", "status"] == tables.STATUS_BAD_PATH
    assert list(m.loc["good1", "train_folds"]) == [] and list(m.loc["good1", "test_folds"]) == [1]
    assert "in both train and test of fold 1" in m.loc["good1", "notes"]
    assert m.loc["good2", "label"] == "sadness" and "majority 'sadness' kept" in m.loc["good2", "notes"]
    assert sorted(m.index[m.notes.isna()]) == ["caf\\xe9", "framesGood", "framesHuge", "loop"]
    assert "index: 1 clip(s) in both the train and the test list of a fold" in proc.stderr
    assert "bad_path" in proc.stderr  # the summary counts the new status


def _big_png(path: Path, side: int) -> Path:
    """A valid grey PNG of side x side, streamed row by row (a few MB on disk, side^2 x 3 bytes decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp, row = zlib.compressobj(1), b"\x00" + b"\x80" * side
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.slow
def test_a_clip_that_kills_its_worker_is_retried_alone(tmp_path):
    """A real out-of-memory kill: one worker with a 700 MiB limit, a 15000 x 15000 PNG let past the pixel
    limit (675 MB decoded), and a good clip in the same batch. The nanny kills the worker; the batch is
    retried clip by clip; only the PNG's clip is marked, with a reason naming memory."""
    from distributed import LocalCluster
    from rich.console import Console

    from fineprep.entries import ClipEntry
    from fineprep.extract import faces
    from fineprep.extract.app import extract_entries
    from fineprep.extract.config import ExtractConfig

    root = tmp_path / "data"
    write_frames(root / "a_good", 4, size=96)
    _big_png(root / "b_huge" / "1.png", 15000)
    entries = [ClipEntry("a_good", "folder", "a_good", media="frames"),
               ClipEntry("b_huge", "folder", "b_huge", media="frames")]
    path, sha = faces.resolve_landmarker(None)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="700MiB",
                      dashboard_address=":0", silence_logs=50, scheduler_kwargs={"allowed_failures": 0}) as cluster:
        config = ExtractConfig(source="all", frames=2, size=64, scheduler=cluster.scheduler_address, batch_size=2,
                               max_pixels=10**9)
        outcome = extract_entries(entries, dataset="folder", root=root, out=tmp_path / "s", config=config,
                                  model_path=path, model_sha256=sha, console=Console(quiet=True))
    m = pq.read_table(tmp_path / "s" / layout.MANIFEST_FILE).to_pandas().set_index("clip_id")
    assert m.loc["a_good", "status"] == tables.STATUS_OK, m.loc["a_good", "error"]
    assert m.loc["b_huge", "status"] == tables.STATUS_ERROR
    assert "worker died (out of memory?)" in m.loc["b_huge", "error"] and "KilledWorker" not in m.loc["b_huge", "error"]
    assert outcome.statuses == {"ok": 1, "error": 1}
    assert (tmp_path / "s" / layout.PARTS_DIR / "batch-000000.parquet").exists(), "the batch is done"
