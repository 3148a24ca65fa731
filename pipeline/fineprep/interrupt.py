"""Ctrl-C ends a job with one line saying how far it got and that the same command resumes it, and exit
status 130 (the shell's code for SIGINT), instead of a screen of tracebacks from every process.

The terminal sends SIGINT to the whole process group, Dask's worker processes included. Those are
started with SIGINT ignored (`workers_ignore_sigint`: a Python started with it ignored keeps it so), so
only this process handles it; `quiet_cluster_on_interrupt` silences the cluster's shutdown logging
before the KeyboardInterrupt unwinds through it. The work itself needs nothing: batches and chunks are
written whole or not at all, and a re-run skips what is done.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

EXIT_INTERRUPTED = 130
NOISY = ("distributed", "tornado", "asyncio", "bokeh")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def workers_ignore_sigint():
    """Start processes (a LocalCluster's nannies and workers) with SIGINT ignored."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def quiet_cluster_on_interrupt():
    """On SIGINT, mute the cluster's loggers, then raise KeyboardInterrupt as Python would."""
    if not _main_thread():
        yield
        return

    def handler(signum, frame):
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def batches_done(out) -> tuple[int, int | None]:
    """(done markers in the store, batches the job has) for the line an interrupted extract prints."""
    import json
    from pathlib import Path

    from fineschema import layout

    out = Path(out)
    parts = out / layout.PARTS_DIR
    done = len(list(parts.glob("batch-*.parquet"))) if parts.is_dir() else 0
    try:
        attrs = json.loads((out / layout.ARRAYS_DIR / "zarr.json").read_text()).get("attributes", {})
        settings = attrs["settings"]
        total = -(-int(settings["num_clips"]) // int(settings["batch_size"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        total = None
    return done, total


def interrupted_line(what: str, done: int, total: int | None, unit: str) -> str:
    """'interrupted after 3 of 10 batches; run the same command again to resume (finished batches are kept)'."""
    of = f"{done} of {total}" if total is not None else f"{done}"
    return (f"{what} interrupted after {of} {unit}; run the same command again to resume "
            f"(finished {unit} are kept)")
