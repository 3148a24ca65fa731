"""fineprep extract under failure and on a real cluster: SIGKILL then resume, and `--scheduler`.

Both run the real models on real Dask processes; the resume test compares the resumed store with a
clean run clip by clip (manifest rows and array contents).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from extract_data import write_video

from fineschema import layout, tables, validate_store

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "fineprep"), "extract", "--dataset", "folder", "--root", str(root), "--out", str(out),
            "--frames", "6", "--size", "96", "--batch-size", "2", *extra]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "data"
    root.mkdir()
    for k in range(12):
        write_video(root / f"v{k:02d}.mp4", 20 + 3 * k, size=192, shift=1 + k % 3)
    (root / "v99.mp4").write_bytes(b"")
    return root


def _load(out: Path):
    m = pq.read_table(out / layout.MANIFEST_FILE).to_pandas().set_index("clip_id").sort_index()
    g = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")
    return m, {name: g[name][:] for name in g.array_keys()}


@pytest.mark.slow
def test_resume_after_sigkill_equals_a_clean_run(dataset, tmp_path):
    clean = tmp_path / "clean"
    subprocess.run(_args(dataset, clean, "--workers", "1"), env=ENV, check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_args(dataset, killed, "--workers", "1"), env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = killed / layout.PARTS_DIR
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("batch-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)   # the CLI, its nannies and workers, all at once
    proc.wait()
    done_before = sorted(p.name for p in parts.glob("batch-*.parquet"))
    assert 2 <= len(done_before) < 7, done_before
    assert not (killed / layout.MANIFEST_FILE).exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in parts.glob("batch-*.parquet")}

    resumed = subprocess.run(_args(dataset, killed, "--workers", "1"), env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(done_before)} of 7 batches already done" in resumed.stderr
    # finished batches were not redone
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("batch-*.parquet") if p.name in stamps} == stamps
    assert validate_store(killed) == []

    m_clean, a_clean = _load(clean)
    m_killed, a_killed = _load(killed)
    cols = [c for c in m_clean.columns if c != "frame_indices"]
    assert m_killed[cols].equals(m_clean[cols])
    assert [list(x) if x is not None else None for x in m_killed.frame_indices] == \
        [list(x) if x is not None else None for x in m_clean.frame_indices]
    assert (m_clean.status == tables.STATUS_OK).sum() == 12
    ok = m_clean[m_clean.status == tables.STATUS_OK].store_index.to_numpy()
    for name in a_clean:
        np.testing.assert_array_equal(a_killed[name][ok], a_clean[name][ok], err_msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_extract_through_an_existing_scheduler(dataset, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "store"
        proc = subprocess.run(_args(dataset, out, "--scheduler", address), env=ENV, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "2 worker(s)" in proc.stderr and address in proc.stderr
        m = pq.read_table(out / layout.MANIFEST_FILE).to_pydict()
        assert m["status"].count(tables.STATUS_OK) == 12 and m["status"].count(tables.STATUS_CORRUPT) == 1
        assert validate_store(out) == []
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
