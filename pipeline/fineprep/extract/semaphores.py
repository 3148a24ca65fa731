"""Remove the POSIX semaphores (/dev/shm/sem.mp-*) that killed extract runs leave behind, and only those.

Dask's local cluster starts its workers with multiprocessing's spawn method, whose queues and locks
are named semaphores (7 per worker). Python's resource tracker unlinks them when their processes die,
but a kill of the whole process group (SIGKILL to the job, an OOM or container kill) takes the tracker
too, and the files stay until reboot.

"No process maps it" is not enough to call a semaphore an orphan: /proc shows only this PID namespace,
and a process in another one (a container sharing /dev/shm, `unshare --pid`) may be using it. So a run
records its own: once its cluster is up, `record_own_semaphores` writes the names that this process and
its descendants map into `/dev/shm/fineprep-sems.<id>.json` and holds an `flock` on that file for its
whole life. The kernel drops the lock when the run dies, in whatever namespace the reader lives, so
`remove_orphaned_semaphores` unlinks only names listed in a record nobody holds (and that no visible
process maps), then the record. A semaphore no fineprep run recorded is never touched.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import uuid
from pathlib import Path

SHM = Path("/dev/shm")
PATTERN = "sem.mp-*"
RECORD_GLOB = "fineprep-sems.*.json"
_NAME = re.compile(r"sem\.mp-[A-Za-z0-9_]+")
_held: list[tuple[int, Path]] = []  # this process's open, locked records


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def _mapped(proc: Path, pids: set[int] | None = None) -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every /dev/shm file mapped by a process we can see (or by `pids`). By
    inode, not name: glibc creates a semaphore under a temporary name, maps it, then links it to its real
    one, so the maps show the temporary name."""
    found: set[tuple[int, int, int]] = set()
    paths = proc.glob("[0-9]*/maps") if pids is None else (proc / str(p) / "maps" for p in pids)
    for maps in paths:
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


def _descendants(proc: Path, root: int) -> set[int]:
    """`root` and every process below it, from /proc/PID/stat's parent field."""
    parent: dict[int, int] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, pp in parent.items() if pp in tree and pid not in tree}
        tree |= more
        grew = bool(more)
    return tree


def record_own_semaphores(shm: Path = SHM, proc: Path = Path("/proc")) -> int:
    """Record the sem.mp-* files this process and its children map, in a record held locked until
    `release_records` or death; returns how many. Linux only; elsewhere it records nothing."""
    if not shm.is_dir() or not (proc / "self" / "maps").exists():
        return 0
    ours = _mapped(proc, _descendants(proc, os.getpid()))
    names = []
    for path in shm.glob(PATTERN):
        try:
            if _key(path.stat()) in ours:
                names.append(path.name)
        except OSError:
            continue
    name = uuid.uuid4().hex
    tmp, record = shm / f".fineprep-sems.{name}.tmp", shm / f"fineprep-sems.{name}.json"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked and filled before a cleaner can see it under its real name
    os.write(fd, json.dumps({"pid": os.getpid(), "names": sorted(names)}).encode())
    os.replace(tmp, record)
    _held.append((fd, record))
    return len(names)


def release_records() -> None:
    """The run ended normally (its semaphores are gone with its processes): drop its records."""
    while _held:
        fd, record = _held.pop()
        record.unlink(missing_ok=True)
        os.close(fd)


def _dead_record(record: Path) -> list[str] | None:
    """The names in a record whose run is gone (None while its run holds it, or when it is not ours)."""
    try:
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            names = json.loads(os.read(fd, 1 << 20) or b"{}").get("names", [])
        except (ValueError, AttributeError):
            names = []
        return [n for n in names if isinstance(n, str) and _NAME.fullmatch(n)]
    finally:
        os.close(fd)


def remove_orphaned_semaphores(shm: Path = SHM, proc: Path = Path("/proc")) -> int:
    """Unlink the semaphores that dead fineprep runs recorded and no visible process maps; returns how
    many went. Linux only (it reads /proc/PID/maps); elsewhere, or when /proc cannot be read, nothing."""
    if not shm.is_dir() or not (proc / "self" / "maps").exists():
        return 0
    removed, in_use = 0, None
    for record in shm.glob(RECORD_GLOB):
        names = _dead_record(record)
        if names is None:
            continue
        in_use = _mapped(proc) if in_use is None else in_use
        for name in names:
            path = shm / name
            try:
                st = path.lstat()
                if st.st_uid == os.getuid() and _key(st) not in in_use:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        record.unlink(missing_ok=True)
    return removed
