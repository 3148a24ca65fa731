"""Unreadable is not missing: `fineprep validate` on a store whose chunk folders it may not read says they
cannot be read and never advises `extract --overwrite` (which would destroy the intact data). Root reads
everything, so the check runs without the capabilities that let it (setpriv); skipped where that cannot
be done."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from toy_store import write_toy_store

from fineschema import layout

SETPRIV = shutil.which("setpriv")
NO_DAC = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def _validate_without_dac(store: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "fineprep"), "validate", "--store", str(store), *args]
    if os.geteuid() == 0:
        cmd = [SETPRIV, *NO_DAC, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a subprocess CLI
@pytest.mark.skipif(os.geteuid() == 0 and SETPRIV is None, reason="root without setpriv reads every folder")
@pytest.mark.parametrize("deep", [False, True])
def test_validate_tells_unreadable_chunks_from_missing_ones(tmp_path, deep):
    store = write_toy_store(tmp_path / "toy", clips_per_class=2)
    chunks = store / layout.ARRAYS_DIR / "frames" / "c"
    assert chunks.is_dir()
    chunks.chmod(0)
    try:
        r = _validate_without_dac(store, *(["--deep"] if deep else []))
    finally:
        chunks.chmod(0o755)
    if os.geteuid() == 0 and "Operation not permitted" in r.stderr and "setpriv" in r.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {r.stderr.strip()[:160]}")
    text = " ".join(r.stderr.split())
    assert r.returncode == 1, r.stderr
    assert "frames: cannot be read (Permission denied" in text and "do not re-extract" in text, text
    assert "have no stored chunk" not in text and "Traceback" not in text
    assert _validate_without_dac(store).returncode == 0  # readable again: valid
