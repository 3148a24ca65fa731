"""Children die with their parent: `describe --procs` pool workers exit within seconds of a SIGKILL of the
driver (they held a model each and stayed a minute or more), and the /dev/shm semaphore cleanup removes
only semaphores that a fineprep run recorded as its own, never another process's (another PID namespace's
processes are invisible in /proc, so "no process maps it" proves nothing there)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LINUX = sys.platform.startswith("linux") and Path("/proc/self/maps").exists()

POOL = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from fineprep.describe import executors

def pid_then_wait(_):
    time.sleep(0.2)
    return os.getpid()

def noop(*args):
    pass

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for _ in range(2):
        slots.put(None)
    init = executors._start_pool_worker if sys.argv[1] == "lifeline" else noop
    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=init, initargs=(slots, 1, os.getpid()))
    pids = set()
    while len(pids) < 2:
        pids |= set(pool.map(pid_then_wait, range(8)))
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def orphan_exit_seconds(mode: str, limit_s: float, folder: Path) -> float:
    """Seconds until both pool workers are gone after their driver is SIGKILLed (`limit_s` when they stay);
    `mode` "lifeline" starts them as describe does, anything else without it."""
    script = folder / "pool_driver.py"  # a file, so that spawned workers can import its functions
    script.write_text(POOL)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not any(_alive(p) for p in pids):
            return time.monotonic() - t0
        time.sleep(0.05)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return limit_s


@pytest.mark.slow  # spawns two interpreters that import fineprep
@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_pool_workers_exit_when_the_driver_is_killed(tmp_path):
    assert orphan_exit_seconds("lifeline", limit_s=10, folder=tmp_path) < 3


HOLDER = """
import multiprocessing as mp, sys, time
from fineprep.extract import semaphores
ctx = mp.get_context("spawn")
locks = [ctx.Lock() for _ in range(2)]
if sys.argv[1:] == ["record"]:
    semaphores.record_own_semaphores()
print(" ".join("sem." + l._semlock.name.lstrip("/") for l in locks), flush=True)
time.sleep(600)
"""

CLEAN_IN_NAMESPACE = "from fineprep.extract import semaphores; print(semaphores.remove_orphaned_semaphores())"


def _holder(*args: str, new_session: bool = False) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *args], stdout=subprocess.PIPE, text=True,
                            start_new_session=new_session)
    return proc, proc.stdout.readline().split()


@pytest.mark.slow  # four interpreters
@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="unshare --pid needs root on Linux")
def test_a_cleanup_in_another_pid_namespace_keeps_live_semaphores_and_removes_a_dead_runs():
    shm = Path("/dev/shm")
    live, live_names = _holder()                        # another program's, alive: invisible from the namespace
    mine, mine_names = _holder("record")                # a live fineprep run's
    dead, dead_names = _holder("record", new_session=True)
    os.killpg(dead.pid, signal.SIGKILL)                 # a killed run, its resource tracker with it
    dead.wait(timeout=30)
    time.sleep(0.3)
    old = time.time() - 3600
    for n in live_names + mine_names + dead_names:      # old enough for any age rule
        os.utime(shm / n, (old, old))
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", CLEAN_IN_NAMESPACE],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "unshare" in r.stderr:
            pytest.skip(f"cannot make a PID namespace here: {r.stderr.strip()[:200]}")
        assert r.returncode == 0, r.stderr
        assert all((shm / n).exists() for n in live_names + mine_names)
        assert not any((shm / n).exists() for n in dead_names)
    finally:
        for proc in (live, mine):
            proc.kill()
            proc.wait()
