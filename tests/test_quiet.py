"""No native log lines (mediapipe's and LiteRT's C++ logging) in what a command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
NATIVE = ("W0000", "I0000", "XNNPACK", "InitGoogle", "inference_feedback_manager", "face_landmarker_graph")


@pytest.mark.slow
def test_synth_prints_no_native_log_lines(tmp_path):
    proc = subprocess.run([str(BIN / "fineprep"), "synth", "--dataset", "dfew", "--out", str(tmp_path / "d"),
                           "--clips-per-class", "1"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = proc.stdout + proc.stderr
    assert not [w for w in NATIVE if w in said], said[-2000:]
    assert "dfew: 7 clips" in said
