"""mediapipe's and LiteRT's C++ side log a page of INFO and warnings to stderr when a model is built and
on its first inference, and have no switch for it: `quiet_native_logs` sends file descriptor 2 to
/dev/null around those calls only, so our own messages still reach the terminal."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_logs():
    """Send file descriptor 2 to /dev/null for the duration (Python's own sys.stderr is flushed first)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
