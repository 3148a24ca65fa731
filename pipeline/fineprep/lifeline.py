"""Child processes die with their parent: a pool worker whose driver was killed exits within a second.

`describe --procs N` runs N spawned processes, each holding a model (about 1 GB with a small one, far more
with a real one). When the driver is SIGKILLed, `concurrent.futures` workers would wait on their task
queue for a minute or more. Each worker calls `die_with_parent` first: on Linux the kernel sends it
SIGKILL when the parent dies (`prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread polls the parent
pid once a second. A parent that died before the call is caught by comparing the pid it handed down.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, every_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def die_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Make this process exit when `parent` (the pid that started it) dies."""
    if not _pdeathsig():
        threading.Thread(target=_watch, args=(parent, every_s), daemon=True, name="fineprep-lifeline").start()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
