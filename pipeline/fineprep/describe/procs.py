"""`--procs N`: one describe process per shard (and per GPU), started and awaited here.

Each child is an ordinary `fineprep describe --shard i/N` run, so it resumes and writes its own
parts like a hand-started one; with `--gpus` each child sees one GPU (CUDA_VISIBLE_DEVICES), which
is how vLLM wants to be scaled for a 7B model: one engine per GPU, no tensor parallelism.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


def child_commands(argv: list[str], procs: int) -> list[list[str]]:
    """`fineprep describe` argv (without --procs/--shard) -> one command per shard."""
    base = [sys.executable, "-m", "fineprep.cli", "describe", *argv, "--no-progress"]
    return [[*base, "--shard", f"{i}/{procs}"] for i in range(procs)]


def run_procs(argv: list[str], procs: int, gpus: list[str] | None, log: Callable[[str], None] = print) -> int:
    """Start every shard, stream nothing, then report each one's last line; returns the worst exit code."""
    children = []
    for i, cmd in enumerate(child_commands(argv, procs)):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        children.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    worst = 0
    for i, child in enumerate(children):
        out, err = child.communicate()
        lines = (out.strip().splitlines() or [""]) if child.returncode == 0 else (err.strip().splitlines() or [""])
        log(f"shard {i}/{procs}: rc={child.returncode} {lines[-1]}")
        worst = max(worst, child.returncode)
    return worst
