"""A store that says `ok` is ok: overwrite never trusts old markers, one writer at a time, a store killed
while being created starts again, validation finds chunks that are missing or of the wrong shape, and a
killed run's leftovers (temporary parts, /dev/shm semaphores) are cleared by the next run.

The fast tests build small stores through the store module itself; the slow ones kill a real
`fineprep extract` process with SIGKILL at a chosen point and look at what the next run makes of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from extract_data import write_video

from fineprep import storelock
from fineprep.describe import writer as dwriter
from fineprep.extract import semaphores, store
from fineschema import layout, tables, validate_store

BIN = Path(sys.executable).parent
FINEPREP = str(BIN / "fineprep")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}   # one log line per message


# ------------------------------------------------------------------------------------------ helpers
def _attrs(num_clips: int, frames: int = 2, size: int = 16) -> dict:
    return store.store_attrs(dataset="folder", source="all", label_set="mafw", landmark_sha256="0" * 64,
                             settings={"frames": frames, "size": size}, num_clips=num_clips,
                             plan_sha256="p" * 64)


def _clip_arrays(frames: int, size: int, value: int) -> dict[str, np.ndarray]:
    return {spec.name: np.full(spec.concrete_shape(1, frames, size)[1:], value, dtype=spec.dtype)
            for spec in layout.ARRAYS}


def make_store(out: Path, n: int = 4, frames: int = 2, size: int = 16) -> Path:
    """A complete small store: arrays with every clip's chunks, one part per clip, the manifest."""
    store.prepare(out, _attrs(n, frames, size), overwrite=False)
    arrays = store.ArrayWriter(out)
    for i in range(n):
        arrays.write(i, _clip_arrays(frames, size, i + 1))
        store.write_part(out, store.part_name(i), [{"clip_id": f"c{i}", "dataset": "folder", "store_index": i,
                                                    "status": tables.STATUS_OK, "label_index": -1}])
    store.compact(out)
    return out


def _chunk(out: Path, name: str, index: int) -> Path:
    arr = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")[name]
    from fineschema.validate import chunk_file

    return chunk_file(out / layout.ARRAYS_DIR, name, arr, index)


def _drop_clip(out: Path, name: str, index: int) -> None:
    """Remove clip `index`'s chunk folder (`c/<index>`) of array `name`, as recreated arrays lack it."""
    shutil.rmtree(out / layout.ARRAYS_DIR / name / "c" / str(index))


HOLD = """
import sys, time
from fineprep import storelock
lock = storelock.shard_lock(sys.argv[1], (int(sys.argv[3]), int(sys.argv[4]))) if sys.argv[2] == "shard" \\
    else storelock.writer_lock(sys.argv[1], "holder-command")
with lock:
    print("held", flush=True)
    time.sleep(120)
"""


def hold(path: Path, kind: str = "writer", i: int = 0, n: int = 1) -> subprocess.Popen:
    """A separate process that takes the store's lock and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), kind, str(i), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def refusal(lock) -> str:
    """The StoreLocked message of entering `lock`, which must be refused."""
    with pytest.raises(storelock.StoreLocked) as err, lock:
        pass
    return str(err.value)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# ------------------------------------------------------------- 1. overwrite trusts no old done marker
def test_overwrite_removes_markers_even_when_the_arrays_are_gone(tmp_path):
    out = make_store(tmp_path / "s")
    shutil.rmtree(out / layout.ARRAYS_DIR)            # what a kill inside an old overwrite left
    assert store.prepare(out, _attrs(4), overwrite=True) is False
    assert store.done_batches(out) == set()
    assert not (out / layout.MANIFEST_FILE).exists()


def test_markers_beside_missing_arrays_are_stale_without_overwrite_too(tmp_path):
    out = make_store(tmp_path / "s")
    shutil.rmtree(out / layout.ARRAYS_DIR)
    notes = []
    assert store.prepare(out, _attrs(4), overwrite=False, note=notes.append) is False
    assert store.done_batches(out) == set() and not (out / layout.MANIFEST_FILE).exists()
    assert len(notes) == 1 and "4 done marker(s) without arrays are stale" in notes[0]


def test_markers_beside_arrays_without_settings_are_refused(tmp_path):
    out = make_store(tmp_path / "s")
    (out / layout.ARRAYS_DIR / "zarr.json").write_text("{not json")
    with pytest.raises(store.SettingsMismatch, match="has 4 done batch.*does not open.*--overwrite"):
        store.prepare(out, _attrs(4), overwrite=False)
    assert store.done_batches(out) == {0, 1, 2, 3}    # nothing was removed without asking


def test_overwrite_removes_markers_before_arrays(tmp_path, monkeypatch):
    """A kill inside an overwrite (here: the arrays refuse to go) leaves arrays without markers."""
    out = make_store(tmp_path / "s")
    real = shutil.rmtree

    def rmtree(path, *a, **k):
        if Path(path).name == layout.ARRAYS_DIR:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        store.prepare(out, _attrs(4), overwrite=True)
    assert store.done_batches(out) == set() and (out / layout.ARRAYS_DIR).exists()


# --------------------------------------------------------------------------------- 2. one writer
def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_frees_the_store(tmp_path):
    out = tmp_path / "s"
    holder = hold(out)
    try:
        msg = refusal(storelock.writer_lock(out))
        assert f"pid {holder.pid} on host " in msg and "(holder-command)" in msg and "\n" not in msg
        assert f"pid {holder.pid}" in refusal(storelock.shard_lock(out, (0, 1)))
    finally:
        _kill(holder)
    with storelock.writer_lock(out, "me"):            # the kernel dropped the dead holder's lock
        assert json.loads((out / storelock.LOCK_FILE).read_text())["pid"] == os.getpid()


def test_describe_shards_share_a_store_but_not_a_shard_or_a_shard_count(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    first = hold(out, "shard", 0, 2)
    try:
        with storelock.shard_lock(out, (1, 2)):       # the other shard of the same job runs beside it
            pass
        assert f"already being described by pid {first.pid}" in refusal(storelock.shard_lock(out, (0, 2)))
        assert f"in 2 shards by pid {first.pid}" in refusal(storelock.shard_lock(out, (0, 3)))
        assert f"being written by pid {first.pid}" in refusal(storelock.writer_lock(out))  # extract is refused
    finally:
        _kill(first)
    with storelock.writer_lock(out):
        pass


def test_readers_do_not_take_the_lock(tmp_path):
    out = make_store(tmp_path / "s")
    holder = hold(out)
    try:
        assert validate_store(out) == []
        assert validate_store(out, deep=True) == []
    finally:
        _kill(holder)


def test_describe_refuses_a_locked_store_in_one_line(tmp_path):
    out = make_store(tmp_path / "s")
    holder = hold(out)
    try:
        proc = subprocess.run([FINEPREP, "describe", "--store", str(out), "--model", "tiny-random", "--engine", "hf"],
                              capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        _kill(holder)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and f"pid {holder.pid}" in proc.stderr, proc.stderr


# ------------------------------------------------------- 3. a store that never recorded its settings
def test_a_store_without_settings_is_created_again(tmp_path):
    out = tmp_path / "s"
    zarr.open_group(str(out / layout.ARRAYS_DIR), mode="w", zarr_format=3)    # killed before the attributes
    notes = []
    assert store.prepare(out, _attrs(3), overwrite=False, note=notes.append) is False
    assert dict(zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r").attrs)["settings"]["num_clips"] == 3
    assert len(notes) == 1 and "never finished being created" in notes[0]
    assert store.prepare(out, _attrs(3), overwrite=False) is True                # and now it resumes


# ------------------------------------------------------------------------------------- 4. validation
def test_validation_finds_missing_chunks_of_ok_clips(tmp_path):
    out = make_store(tmp_path / "s")
    assert validate_store(out) == []
    _drop_clip(out, "frames", 2)
    _chunk(out, "landmarks", 0).unlink()      # the file alone: only the deep check reads each chunk's file
    expected = [f"{layout.ARRAYS_DIR}/frames: 1 stored clips have no stored chunk (c2); "
                "re-extract them (`fineprep extract --overwrite`)"]
    assert validate_store(out) == expected
    assert validate_store(out, deep=True) == [expected[0], expected[0].replace("frames", "landmarks").replace("c2", "c0")]


def test_validation_finds_rows_sharing_a_store_index(tmp_path):
    out = make_store(tmp_path / "s")
    store.write_part(out, "batch-000009.parquet", [{"clip_id": "dup", "dataset": "folder", "store_index": 1,
                                                    "status": tables.STATUS_NO_FACE}])
    store.compact(out)
    assert validate_store(out) == [f"{layout.MANIFEST_FILE}: 1 store_index values are shared by several rows (1)"]


def test_deep_validation_finds_chunks_of_another_size_or_dtype(tmp_path):
    out = make_store(tmp_path / "s", size=16)
    other = make_store(tmp_path / "other", size=24)          # a run with other settings wrote clip 1
    shutil.copy(_chunk(other, "frames", 1), _chunk(out, "frames", 1))
    # Same byte count, other item size: uint8 bytes in a float32 chunk.
    spec = layout.ARRAY_SPECS["blendshapes"]
    nbytes = int(np.prod(spec.chunk_shape(2, 16))) * 4
    scratch = zarr.create_array(str(tmp_path / "u8"), shape=(1, nbytes), chunks=(1, nbytes), dtype="uint8",
                                compressors=store.codec_for("uint8"), fill_value=0)
    scratch[0] = np.arange(nbytes) % 251
    shutil.copy(tmp_path / "u8" / "c" / "0" / "0", _chunk(out, "blendshapes", 3))

    assert validate_store(out) == []                          # cheap: metadata and presence only
    deep = validate_store(out, deep=True)
    assert len(deep) == 2, deep
    assert deep[0].startswith(f"{layout.ARRAYS_DIR}/frames: 1 stored clips have chunks that do not match the layout (c1: ")
    assert "expected 1536 of 1" in deep[0]                    # 2 x 16 x 16 x 3 uint8
    assert deep[1].startswith(f"{layout.ARRAYS_DIR}/blendshapes: 1 stored clips") and "(c3: " in deep[1]
    assert "1-byte items, expected 416 of 4" in deep[1]


def test_validate_command_exit_codes(tmp_path):
    out = make_store(tmp_path / "s")
    ok = subprocess.run([FINEPREP, "validate", "--store", str(out), "--deep"], capture_output=True, text=True,
                        env=ENV, timeout=120)
    assert ok.returncode == 0 and "valid (deep check)" in ok.stdout
    _drop_clip(out, "landmarks", 0)
    bad = subprocess.run([FINEPREP, "validate", "--store", str(out)], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert bad.returncode == 1 and "landmarks: 1 stored clips have no stored chunk (c0)" in bad.stderr


@pytest.mark.parametrize("damage", ["future_schema", "broken_manifest"])
def test_describe_validates_the_store_before_writing(tmp_path, damage):
    out = make_store(tmp_path / "s")
    if damage == "future_schema":
        zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r+").attrs["schema_version"] = 99
    else:
        (out / layout.MANIFEST_FILE).write_bytes(b"PAR1 not really parquet")
    proc = subprocess.run([FINEPREP, "describe", "--store", str(out), "--model", "tiny-random", "--engine", "hf"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert ("newer than this fineclip" if damage == "future_schema" else "not a readable Parquet") in proc.stderr
    assert not (out / layout.DESCRIPTIONS_DIR).exists()


# --------------------------------------------------------------------------- 5. leftovers of a kill
def test_temporary_files_of_unfinished_writes_are_removed(tmp_path):
    out = make_store(tmp_path / "s")
    stale = [out / layout.PARTS_DIR / ".batch-000002.parquet.4242.tmp", out / ".manifest.parquet.4242.tmp"]
    for p in stale:
        p.write_bytes(b"half a parquet file")
    notes = []
    assert store.prepare(out, _attrs(4), overwrite=False, note=notes.append) is True
    assert not any(p.exists() for p in stale) and store.done_batches(out) == {0, 1, 2, 3}
    assert notes == ["removed 2 unfinished temporary file(s) left by an interrupted run"]

    desc = dwriter.parts_dir(out)
    desc.mkdir()
    mine, other_shard = desc / ".part-aaaa.parquet.4242.ab.tmp", desc / ".part-bbbb.parquet.4243.cd.tmp"
    for p in (mine, other_shard):
        p.write_bytes(b"x")
    assert dwriter.remove_stale_temps(out, (0, 2), ["part-aaaa.parquet"]) == 1   # the parts shard 0 will write
    assert not mine.exists() and other_shard.exists()       # shard 1 may be writing it now


SEMAPHORES = """
import multiprocessing as mp, sys
from fineprep.extract import semaphores
ctx = mp.get_context("spawn")
locks = [ctx.Lock() for _ in range(3)]                  # named semaphores, like Dask's nanny queues
if sys.argv[1:] == ["record"]:
    semaphores.record_own_semaphores()                  # what an extract run does once its cluster is up
print("\\n".join(l._semlock.name.lstrip("/") for l in locks), flush=True)
print("made", flush=True)
import time; time.sleep(120)
"""


def _sem_names(proc: subprocess.Popen) -> list[str]:
    names = []
    for line in proc.stdout:
        if line.strip() == "made":
            return names
        names.append("sem." + line.strip())
    raise AssertionError(proc.stderr.read())


@pytest.mark.skipif(not Path("/dev/shm").is_dir() or not Path("/proc/self/maps").exists(), reason="Linux only")
def _sem_process(*args: str, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SEMAPHORES, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=new_session)


def test_semaphores_of_a_killed_process_group_are_removed_and_live_ones_kept():
    """Only what a fineprep run recorded, and only once that run is dead: a killed process that recorded
    nothing (another program's) keeps its semaphores too."""
    live = _sem_process("record")
    dead, foreign = _sem_process("record", new_session=True), _sem_process(new_session=True)
    shm = Path("/dev/shm")
    try:
        live_names, dead_names, foreign_names = _sem_names(live), _sem_names(dead), _sem_names(foreign)
        for proc in (dead, foreign):
            os.killpg(proc.pid, signal.SIGKILL)         # the process and its resource tracker
            proc.wait(timeout=30)
        time.sleep(0.5)
        assert all((shm / n).exists() for n in dead_names + live_names + foreign_names)   # the leak is real
        assert semaphores.remove_orphaned_semaphores() >= len(dead_names)
        assert not any((shm / n).exists() for n in dead_names)
        assert all((shm / n).exists() for n in live_names + foreign_names)
    finally:
        _kill(live)
        for n in foreign_names:
            (shm / n).unlink(missing_ok=True)


# ------------------------------------------------------------- the same, through real killed extracts
@pytest.fixture(scope="module")
def faces_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity") / "data"
    root.mkdir()
    for k in range(6):
        write_video(root / f"clip{k}.mp4", 10 + k, size=128)
    return root


def _extract_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [FINEPREP, "extract", "--dataset", "folder", "--root", str(root), "--out", str(out), "--frames", "4",
            "--size", "48", "--workers", "1", "--batch-size", "1", *extra]


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def _wait_for(test, proc: subprocess.Popen, timeout: float = 180, poll: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not test():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, "timed out"
        time.sleep(poll)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def _ok_rows(out: Path) -> int:
    return pq.read_table(out / layout.MANIFEST_FILE, columns=["status"]).column("status").to_pylist().count("ok")


@pytest.mark.slow
def test_overwrite_of_a_store_whose_arrays_are_gone_extracts_everything(faces_root, tmp_path):
    out = tmp_path / "s"
    first = _run(_extract_cmd(faces_root, out))
    assert first.returncode == 0, first.stderr[-2000:]
    assert _ok_rows(out) == 6
    shutil.rmtree(out / layout.ARRAYS_DIR)
    again = _run(_extract_cmd(faces_root, out, "--overwrite"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "6 clips in" in again.stderr and "; 0 batches were already done" in again.stderr
    assert validate_store(out, deep=True) == [] and _ok_rows(out) == 6
    assert zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")["frames"][:].max(axis=(1, 2, 3, 4)).min() > 0


@pytest.mark.slow
def test_a_store_killed_before_it_recorded_its_settings_resumes_without_overwrite(faces_root, tmp_path):
    caught = False
    for attempt in range(4):                            # the window is a few ms wide; try until a kill lands in it
        out = tmp_path / f"s{attempt}"
        proc = _start(_extract_cmd(faces_root, out))
        _wait_for(lambda out=out: (out / layout.ARRAYS_DIR / "zarr.json").exists(), proc, poll=0.0005)
        _kill(proc)
        if "schema_version" not in dict(zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r").attrs):
            caught = True
            break
    assert caught, "no kill landed between the group and its attributes"
    again = _run(_extract_cmd(faces_root, out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "never finished being created" in again.stderr and "other settings" not in again.stderr
    assert validate_store(out, deep=True) == [] and _ok_rows(out) == 6


def _wait_until_orphaned(shm: Path, names: set[str], timeout: float = 60.0) -> None:
    """Wait until the killed run's semaphores are ones the next run may remove: no process still maps
    them (a worker outside the killed group can outlive it by a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        in_use = semaphores._mapped(Path("/proc"))
        busy = False
        for name in names:
            try:
                st = os.stat(shm / name)
            except FileNotFoundError:
                continue
            busy |= (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in in_use
        if not busy:
            return
        time.sleep(0.5)
    raise AssertionError(f"semaphores of the killed run still mapped or young after {timeout:.0f} s")


@pytest.mark.slow
def test_two_extracts_one_store_and_a_killed_run_leaves_nothing_behind(faces_root, tmp_path):
    out = tmp_path / "s"
    shm = Path("/dev/shm")
    first = _start(_extract_cmd(faces_root, out, "--workers", "2"), start_new_session=True)
    _wait_for(lambda: (out / storelock.LOCK_FILE).exists()
              and f'"pid": {first.pid}' in (out / storelock.LOCK_FILE).read_text(), first)

    second = _run(_extract_cmd(faces_root, out, "--size", "64", "--overwrite"))
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid} on host" in lines[0], second.stderr

    _wait_for(lambda: len(store.done_batches(out)) >= 2, first)
    records = [json.loads(p.read_text()) for p in shm.glob(semaphores.RECORD_GLOB)]
    leaked = {n for r in records if r.get("pid") == first.pid for n in r["names"]}  # what the run recorded
    os.killpg(first.pid, signal.SIGKILL)                # the driver, its Dask workers and its resource tracker
    first.wait(timeout=30)
    assert len(leaked) >= 7                             # one worker's queues and locks at least
    _wait_until_orphaned(shm, leaked)
    (out / layout.PARTS_DIR / ".batch-000005.parquet.999999.tmp").write_bytes(b"cut short")  # a write cut by the kill

    still_there = [n for n in leaked if (shm / n).exists()]  # another extract on this machine may clean first
    third = _run(_extract_cmd(faces_root, out))
    assert third.returncode == 0, third.stderr[-2000:]
    assert "resuming" in third.stderr and _ok_rows(out) == 6 and validate_store(out, deep=True) == []
    assert list((out / layout.PARTS_DIR).glob(".*.tmp")) == []
    assert not still_there or "semaphores left in /dev/shm by killed runs" in third.stderr
    in_use = semaphores._mapped(Path("/proc"))
    still = [n for n in leaked if (shm / n).exists()
             and (lambda st: (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))(os.stat(shm / n)) not in in_use]
    assert still == []
