"""Paths built from store contents (clip ids, dataset names) must stay inside the folder they are joined to.

A store is input, not trusted code: a manifest can say `clip_id = "../../home"` as easily as `00001`.
Both programs join such values to an output folder only through `safe_join`, which refuses anything
that could leave that folder (or name the folder itself) before a single file is written or removed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import SchemaError


class UnsafePathError(SchemaError):
    """A path taken from a store or an index that would leave the folder it is joined to."""


def safe_join(root: str | os.PathLike, *parts: str, follow_links: bool = True) -> Path:
    """`root / parts`, refused unless it names something strictly inside `root`.

    Refused: absolute parts or drive letters, `..` components, NUL bytes, and a result equal to `root`
    itself (so `rmtree` on it could never take the whole folder). With `follow_links` the joined path is
    also resolved on disk, so a symlink inside `root` that points elsewhere is refused too.
    """
    pieces: list[str] = []
    for part in parts:
        text = os.fspath(part)
        norm = text.replace("\\", "/")
        if "\x00" in norm:
            raise UnsafePathError(f"path {text!r} holds a NUL byte")
        if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
            raise UnsafePathError(f"path {text!r} is absolute; it would leave {root}")
        components = [c for c in norm.split("/") if c not in ("", ".")]
        if ".." in components:
            raise UnsafePathError(f"path {text!r} climbs with '..'; it would leave {root}")
        pieces.extend(components)
    if not pieces:
        raise UnsafePathError(f"path {'/'.join(map(str, parts))!r} names {root} itself, not something inside it")
    joined = Path(root).joinpath(*pieces)
    if follow_links:
        base = Path(root).resolve()
        try:
            real = joined.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise UnsafePathError(f"path {'/'.join(pieces)!r} under {root} cannot be resolved ({exc})") from None
        if real == base or not real.is_relative_to(base):
            raise UnsafePathError(f"path {'/'.join(pieces)!r} resolves to {real}, outside {base}")
    return joined
