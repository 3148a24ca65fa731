"""One writer per store: an OS lock (`flock`) on STORE/.lock, held by the process that drives the job.

Two writers on one store corrupt it without a sound (chunks of two sizes under one set of attributes,
every clip described twice), so `extract` and `describe` take this lock first and a second writer
exits with one line naming the holder. The kernel drops an `flock` when its process dies, even by
SIGKILL, so a killed run never leaves the store locked; the file's text (pid, host, start time,
command) is only read to name a live holder. Readers (show, stats, validate, the trainer) never lock.

Describe shards (`--shard i/N`, `--procs N`) are one job split between processes: each takes
STORE/.lock shared (which keeps extract out) and its own STORE/.lock.describe-IofN exclusive, and
refuses to start beside shards of another N, whose clip sets would overlap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fineschema.layout import ARRAYS_DIR
from fineschema.nolinks import LinkError, open_nofollow, refuse_links_under

from .errors import FineprepError

LOCK_FILE = ".lock"
SHARD_PREFIX = ".lock.describe-"


class StoreLocked(FineprepError, RuntimeError):
    """Another live process is writing the store; the message names it."""


class LinkedStore(StoreLocked):
    """A symbolic link inside the store where a writer would write (the lock file, a part, arrays.zarr)."""


def _command() -> str:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    text = " ".join(argv)
    return text if len(text) <= 160 else text[:157] + "..."


def _open(path: Path) -> int:
    """The lock file, never through a link (it is truncated and written: a link would carry that outside)."""
    try:
        return open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
    except LinkError as exc:
        raise LinkedStore(str(exc)) from None
    except OSError as exc:
        raise StoreLocked(f"cannot open the store's lock file {path}: {exc.strerror}") from None


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _record(fd: int, command: str) -> None:
    """Write who holds the lock into the lock file (read by a refused writer)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (text + "\n").encode(), 0)


def holder(path: Path) -> str:
    """'pid 12 on host h since T (command)' from a lock file, or a plain note when it holds no record."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (it has not recorded itself yet)"
    return (f"pid {info.get('pid')} on host {info.get('host', '?')} since {info.get('since', '?')} "
            f"({info.get('command', '?')})")


def _shard_files(store: Path) -> list[Path]:
    return sorted(store.glob(SHARD_PREFIX + "*"))


def _held(path: Path) -> bool:
    """Whether some process holds `path` exclusively now (probed with a shared lock, released at once)."""
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except (OSError, LinkError):
        return False
    try:
        return not _try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def _busy(store: Path) -> StoreLocked:
    shards = [holder(p) for p in _shard_files(store) if _held(p)]
    who = "; ".join(shards) if shards else holder(store / LOCK_FILE)
    return StoreLocked(f"store {store} is being written by {who}; run again once it has finished "
                       "(one writer at a time)")


def _no_links(store: Path, skip: tuple[str, ...] = ()) -> None:
    """Refuse a store with a link anywhere inside it (outside `skip`) before this writer writes there."""
    try:
        refuse_links_under(store, skip)
    except LinkError as exc:
        raise LinkedStore(str(exc)) from None


@contextlib.contextmanager
def writer_lock(store: str | Path, command: str | None = None) -> Iterator[None]:
    """Hold the store's lock exclusively (extract); raise StoreLocked when anyone else writes it."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    fd = _open(store / LOCK_FILE)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            raise _busy(store)
        _no_links(store)
        _record(fd, command or _command())
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def shard_lock(store: str | Path, shard: tuple[int, int], command: str | None = None) -> Iterator[None]:
    """Hold the store shared and shard i/N exclusively (describe); raise StoreLocked on any conflict."""
    store = Path(store)
    i, n = shard
    fds: list[int] = []
    try:
        fds.append(_open(store / LOCK_FILE))
        if not _try_lock(fds[0], fcntl.LOCK_SH):
            raise StoreLocked(f"store {store} is being written by {holder(store / LOCK_FILE)}; "
                              "run again once it has finished (one writer at a time)")
        mine = store / f"{SHARD_PREFIX}{i}of{n}"
        fds.append(_open(mine))
        if not _try_lock(fds[1], fcntl.LOCK_EX):
            raise StoreLocked(f"shard {i}/{n} of store {store} is already being described by {holder(mine)}")
        _no_links(store, skip=(ARRAYS_DIR,))  # describe writes no chunk: arrays.zarr itself is checked, not walked
        _record(fds[1], command or _command())
        for other in _shard_files(store):
            count = other.name.rsplit("of", 1)[-1]
            if count != str(n) and _held(other):
                raise StoreLocked(f"store {store} is being described in {count} shards by {holder(other)}; "
                                  f"use the same shard count ({count}) or wait")
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)
