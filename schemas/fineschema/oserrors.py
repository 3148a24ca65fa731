"""The machine's errors (disk full, read-only, permission denied) in one line that says what failed, where,
and that a re-run resumes; shared by every command of both programs.

A full disk is not a bad clip, a bad checkpoint or a bad `model.pretrained`: the writers' own messages
(`OSError`, or a library's wrapping of one, such as safetensors' `IoError(Os { code: 28 ... })`) are
traced back to their errno here, so a command can name the real cause instead of the file it happened
to be reading or writing.
"""

from __future__ import annotations

import errno
import os
import re

REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "an I/O error (a failing disk?)",
}
ADVICE = {
    errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EROFS: "make it writable",
    errno.EACCES: "fix the permissions", errno.EPERM: "fix the permissions", errno.EIO: "check the disk",
}
_TEXT = {
    "No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def machine_errno(exc: BaseException) -> int | None:
    """The errno of a machine error behind `exc` (itself, its causes, or named in a wrapper's text)."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in REASONS:
            return link.errno
        text = str(link)
        code = re.search(r"code: (\d+)", text)
        if code and int(code.group(1)) in REASONS:
            return int(code.group(1))
        for words, number in _TEXT.items():
            if words in text:
                return number
    return None


def _where(exc: BaseException) -> str | None:
    for link in _chain(exc):
        if isinstance(link, OSError) and link.filename:
            return os.fsdecode(link.filename)
    return None


def machine_error_line(exc: BaseException, what: str, where: str | None = None) -> str | None:
    """'WHAT failed at PATH: the disk is full (ENOSPC); free some space and run the same command again: it
    resumes where it stopped', or None when `exc` is not the machine's."""
    number = machine_errno(exc)
    if number is None:
        return None
    place = where or _where(exc)
    return (f"{what} failed{' at ' + place if place else ''}: {REASONS[number]} ({errno.errorcode[number]}); "
            f"{ADVICE[number]} and run the same command again: it resumes where it stopped")
