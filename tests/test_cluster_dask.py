"""Extract and describe on a real Dask cluster on loopback, losing a worker mid-job.

A scheduler and two workers are started with the `dask` CLI (`--no-nanny`, so a killed worker stays
dead and its work must move to the other one). While each job runs, one worker that is executing a
task is killed with SIGKILL. The job must still finish, and every clip must be in the store exactly
once: one manifest row and one array row per clip after extract, one description row per clip
after describe. Describe uses the tiny random-weight LLaVA with the `hf` engine (the text is
meaningless; the test checks plumbing and counts).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from extract_data import write_video

from fineschema import layout, tables, validate_store

BIN = Path(sys.executable).parent
CLIPS = 14

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, stopped at the end."""

    def __init__(self, env: dict):
        self.env = env
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.procs: list[subprocess.Popen] = []
        self._spawn("scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1], "--no-dashboard")

    def _spawn(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(BIN / "dask"), *args], env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> None:
        self._spawn("worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                    "--host", "127.0.0.1", "--memory-limit", "0")

    def client(self):
        from distributed import Client

        return Client(self.address, timeout="60s")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _executing(dask_worker) -> list[str]:
    """Runs inside each worker: keys of the tasks it is executing right now."""
    return [str(ts.key) for ts in dask_worker.state.executing]


# Workers cannot import this test module: send the helper above by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def kill_a_busy_worker(client, job: subprocess.Popen, finished: callable, at_least: int, timeout: float = 240):
    """Once `finished()` >= at_least while the job still runs, SIGKILL a worker that is executing a
    task; returns (worker name, keys it was executing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, "the job ended before a worker could be killed mid-job"
        if finished() >= at_least:
            busy = {a: keys for a, keys in client.run(_executing).items() if keys}
            if busy:
                address, keys = next(iter(busy.items()))
                info = client.scheduler_info()["workers"][address]
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                return info["name"], keys
        time.sleep(0.02)
    raise AssertionError(f"no worker was busy within {timeout} s")


@pytest.fixture
def cluster(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2",
           "FINECLIP_CACHE": str(tmp_path / "cache")}
    c = LoopbackCluster(env)
    try:
        c.add_worker("w0")
        c.add_worker("w1")
        yield c
    finally:
        c.stop()


def test_extract_and_describe_survive_a_worker_killed_mid_job(cluster, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for k in range(CLIPS):
        write_video(root / f"v{k:02d}.mp4", 16 + 2 * k, size=160, shift=1 + k % 3)
    out = tmp_path / "store"

    with cluster.client() as client:
        client.wait_for_workers(2, timeout=120)

        # ---- extract: one clip per task, kill a busy worker once a batch is durably done
        parts = out / layout.PARTS_DIR
        job = subprocess.Popen(
            [str(BIN / "fineprep"), "extract", "--dataset", "folder", "--root", str(root), "--out", str(out),
             "--frames", "4", "--size", "64", "--batch-size", "1", "--scheduler", cluster.address],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed, keys = kill_a_busy_worker(client, job, lambda: len(list(parts.glob("batch-*.parquet"))), 1)
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr[-3000:]
        assert any(k.startswith("fineprep-extract-") for k in keys), keys
        assert len(client.scheduler_info()["workers"]) == 1, "the killed worker should be gone"

        manifest = pq.read_table(out / layout.MANIFEST_FILE).to_pydict()
        assert sorted(manifest["clip_id"]) == sorted(set(manifest["clip_id"])), "a clip appears twice"
        assert len(manifest["clip_id"]) == CLIPS
        assert manifest["status"] == [tables.STATUS_OK] * CLIPS, manifest["error"]
        assert sorted(manifest["store_index"]) == list(range(CLIPS))      # one array row per clip
        assert validate_store(out) == []
        frames = zarr.open_group(str(out / layout.ARRAYS_DIR), mode="r")["frames"][:]
        assert frames.shape[0] == CLIPS and all(np.asarray(f).std() > 5 for f in frames)  # every row written

        # ---- describe: a fresh second worker, two clips per chunk, kill a busy worker again
        cluster.add_worker("w2")
        client.wait_for_workers(2, timeout=120)
        descriptions = out / layout.DESCRIPTIONS_DIR
        job = subprocess.Popen(
            [str(BIN / "fineprep"), "describe", "--store", str(out), "--model", "tiny-random", "--engine", "hf",
             "--frames", "4", "--chunk", "2", "--max-tokens", "48", "--no-progress", "--scheduler", cluster.address],
            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, keys = kill_a_busy_worker(client, job, lambda: len(list(descriptions.glob("part-*.parquet"))), 1)
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr[-3000:]
        assert any(k.startswith("fineprep-describe-") for k in keys), keys

    rows = pq.read_table(descriptions).to_pydict()
    assert Counter(rows["clip_id"]) == Counter(manifest["clip_id"]), "every clip described exactly once"
    assert set(rows["status"]) == {"ok"} and all(rows["random_weights"])
    assert len(list(descriptions.glob("part-*.parquet"))) == CLIPS // 2   # one part per chunk, none twice
    assert f"described {CLIPS}, failed 0" in stdout

    # A second run finds everything done and submits nothing.
    again = subprocess.run(
        [str(BIN / "fineprep"), "describe", "--store", str(out), "--model", "tiny-random", "--engine", "hf",
         "--frames", "4", "--chunk", "2", "--max-tokens", "48", "--no-progress", "--scheduler", cluster.address],
        env=cluster.env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr[-2000:]


def test_a_chunk_that_runs_twice_is_written_once(tmp_path, monkeypatch):
    """What a worker that dies after writing its part leaves behind: the scheduler re-runs the chunk,
    which finds the part by its content-derived name and generates nothing. (Tiny random weights:
    plumbing only.)"""
    import torch
    from describe_store import make_store

    from fineprep.describe import step
    from fineprep.describe.runner import DescribeConfig

    torch.set_num_threads(1)
    monkeypatch.setenv("FINECLIP_CACHE", str(tmp_path / "cache"))
    store = make_store(tmp_path / "store", n=3)
    cfg = DescribeConfig(store=store, model="tiny-random", engine="hf", frames=4, max_tokens=8)
    job = step.ChunkJob(step.JobSetup.resolve(cfg, "dfew"), (("clip000", 0), ("clip002", 2)))
    with step.Engines() as engines:
        first = step.describe_chunk(job, engines)
    assert first == job.part_path and first.name.startswith("part-")

    def no_engine(*args, **kwargs):
        raise AssertionError("a finished chunk must not load a model")

    mtime = first.stat().st_mtime_ns
    assert step.describe_chunk(job, step.Engines(no_engine)) == first
    parts = list((store / layout.DESCRIPTIONS_DIR).iterdir())
    assert parts == [first] and first.stat().st_mtime_ns == mtime      # no second file, no temp file left
    assert pq.read_table(parts[0]).column("clip_id").to_pylist() == ["clip000", "clip002"]
    swapped = step.ChunkJob(job.setup, (("clip002", 2), ("clip000", 0)))
    assert swapped.part_name == job.part_name != step.ChunkJob(job.setup, job.clips[:1]).part_name
    assert step.ChunkJob(job.setup, job.clips, attempt=1).part_name != job.part_name


def test_dask_writes_the_parts_the_local_run_names(tmp_path, monkeypatch):
    """The same chunks get the same part names on a Dask cluster as in one process, and a second Dask
    run finds every part and writes nothing."""
    from dataclasses import replace

    from describe_store import make_store
    from distributed import LocalCluster

    from fineprep.describe.executors import DaskExecutor
    from fineprep.describe.runner import DescribeConfig, plan_describe, run_describe

    monkeypatch.setenv("FINECLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = make_store(tmp_path / "store", n=5)
    cfg = DescribeConfig(store=store, model="tiny-random", engine="hf", frames=2, max_tokens=4, chunk=2)
    planned = sorted(job.part_name for job in plan_describe(cfg, log=lambda m: None).jobs)
    local = run_describe(replace(cfg, store=make_store(tmp_path / "local", n=5)), progress=False, log=lambda m: None)
    assert sorted(p.name for p in local.parts) == planned
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        s = run_describe(cfg, progress=False, log=lambda m: None, executor=DaskExecutor(lc.scheduler_address))
        assert (s.described, s.failed) == (5, 0)
        assert sorted(p.name for p in s.parts) == planned and len(planned) == 3
        before = {p.name: p.stat().st_mtime_ns for p in (store / layout.DESCRIPTIONS_DIR).iterdir()}
        msgs = []
        again = run_describe(cfg, progress=False, log=msgs.append, executor=DaskExecutor(lc.scheduler_address))
    assert again.skipped == 5 and again.parts == [] and "nothing to do" in msgs[0]
    assert {p.name: p.stat().st_mtime_ns for p in (store / layout.DESCRIPTIONS_DIR).iterdir()} == before


def _stand_in_slurm(folder: Path) -> Path:
    """`srun` and `scontrol` stand-ins: srun drops its own options and runs the step here; scontrol
    names 127.0.0.1 as the allocation's only node, so every address stays on loopback."""
    folder.mkdir()
    (folder / "srun").write_text('#!/bin/bash\nwhile [[ "${1:-}" == -* ]]; do shift; done\nexec "$@"\n')
    (folder / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


def _reap(marker: str, timeout: float = 30) -> list[str]:
    """Processes whose command line holds `marker`: wait for them to exit, kill what is left (by pid),
    and return what had to be killed."""
    import psutil

    def alive():
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if marker in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except psutil.Error:
                pass
        return found

    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive()
    for p in left:
        p.kill()
    return [" ".join(p.info["cmdline"]) for p in left]


def test_slurm_recipes_run_as_written_on_one_stand_in_node(tmp_path):
    """deploy/slurm/extract.sbatch and describe_array.sbatch, run by bash as SLURM would run them on
    a one-node allocation (srun and scontrol replaced by stand-ins): the scripts start a real
    scheduler and workers, extract through them, clean up after themselves, and two array tasks
    describe every clip once between them (tiny random-weight model, `hf` engine: plumbing only)."""
    root = tmp_path / "data"
    root.mkdir()
    for k in range(6):
        write_video(root / f"v{k}.mp4", 14 + k, size=160, shift=1 + k % 3)
    store = tmp_path / "store"
    job_id = f"{os.getpid()}{time.monotonic_ns() % 100000}"
    env = {**os.environ, "PATH": f"{_stand_in_slurm(tmp_path / 'slurm')}:{BIN}:{os.environ['PATH']}",
           "SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": "node0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_SUBMIT_DIR": str(tmp_path), "TMPDIR": str(tmp_path),
           "DATA_ROOT": str(root), "STORE": str(store), "DATASET": "folder", "FRAMES": "4", "SIZE": "64",
           "DASK_PORT": str(_free_port()), "DASK_DASHBOARD_PORT": str(_free_port()), "HF_HUB_OFFLINE": "1",
           "FINECLIP_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "2"}
    repo = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(["bash", str(repo / "deploy/slurm/extract.sbatch")], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    finally:
        leftovers = _reap(f"dask-{job_id}") + _reap(f".dask-scheduler-{job_id}.json")
    assert not leftovers, f"the script left processes running: {leftovers}"
    assert not (tmp_path / f".dask-scheduler-{job_id}.json").exists()
    manifest = pq.read_table(store / layout.MANIFEST_FILE).to_pydict()
    assert manifest["status"] == [tables.STATUS_OK] * 6

    for task in range(2):
        proc = subprocess.run(
            ["bash", str(repo / "deploy/slurm/describe_array.sbatch")], capture_output=True, text=True, timeout=600,
            env={**env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2", "MODEL": "tiny-random",
                 "ENGINE": "hf", "MAX_TOKENS": "8", "CHUNK": "2"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(store / layout.DESCRIPTIONS_DIR).to_pydict()
    assert Counter(rows["clip_id"]) == Counter(manifest["clip_id"])
    assert set(rows["status"]) == {"ok"}
