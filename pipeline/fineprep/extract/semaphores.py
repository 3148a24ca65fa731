"""Remove the POSIX semaphores (/dev/shm/sem.mp-*) that killed extract runs leave behind.

Dask's local cluster starts its workers with multiprocessing's spawn method, whose queues and locks
are named semaphores (7 per worker). Python's resource tracker unlinks them when their processes die,
but a kill of the whole process group (SIGKILL to the job, an OOM or container kill) takes the tracker
too, and the files stay until reboot. Their names carry no pid, but a semaphore in use is mapped into
every process that opened it (an open semaphore is a shared mapping of its file), so one that no
process maps is an orphan: no process holds it, and multiprocessing never reuses a name.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM = Path("/dev/shm")
PATTERN = "sem.mp-*"
MIN_AGE_S = 5.0   # younger semaphores may belong to a run that has not mapped them yet


def _mapped(proc: Path) -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every /dev/shm file mapped by a process we can see. By inode, not name:
    glibc creates a semaphore under a temporary name, maps it, then links it to its real one, so the
    maps show the temporary name."""
    found: set[tuple[int, int, int]] = set()
    for maps in proc.glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:  # the process ended, or is not ours to read
            continue
        for line in text.splitlines():
            if "/dev/shm/" not in line:
                continue
            fields = line.split()
            try:
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                found.add((major, minor, int(fields[4])))
            except (IndexError, ValueError):
                continue
    return found


def remove_orphaned_semaphores(shm: Path = SHM, proc: Path = Path("/proc"), min_age_s: float = MIN_AGE_S) -> int:
    """Unlink this user's sem.mp-* files that no running process maps; returns how many went.

    Linux only (it reads /proc/PID/maps); elsewhere, or when /proc cannot be read, it removes nothing.
    `min_age_s` leaves alone a semaphore created this instant, before its creator's mapping shows.
    """
    if not shm.is_dir() or not (proc / "self" / "maps").exists():
        return 0
    uid, now = os.getuid(), time.time()
    candidates = []
    for path in shm.glob(PATTERN):
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_uid == uid and now - st.st_mtime >= min_age_s:
            candidates.append((path, (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)))
    if not candidates:
        return 0
    in_use = _mapped(proc)
    removed = 0
    for path, key in candidates:
        if key not in in_use:
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed
